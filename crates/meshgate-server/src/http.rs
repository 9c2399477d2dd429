//! `/healthz`, `/readyz` and `/metrics` for orchestrators and Prometheus; `/catalog` for
//! people.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::gateway::Gateway;

pub(crate) async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    mut stop: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/catalog") }),
        )
        .route("/catalog", get(crate::catalog_page::index))
        .route(
            "/catalog/{domain}/{name}",
            get(crate::catalog_page::product),
        )
        .with_state(gateway);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
}

/// Ready when the mesh is loaded; lists what is quarantined and why.
async fn readyz(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    let mesh = gw.mesh();
    let text = |q: &[Arc<meshgate_mesh::Quarantine>]| -> Vec<String> {
        q.iter().map(|q| q.to_string()).collect()
    };
    let body = serde_json::json!({
        "ready": true,
        "products": mesh.products().len(),
        "quarantined": text(mesh.quarantined()),
        // Edited into invalid contracts; their last good version is still served.
        "invalid_changes": text(mesh.kept()),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gw.query.metrics.render(),
    )
}
