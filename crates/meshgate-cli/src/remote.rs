//! The client verbs' (`sql`, `catalog`) connection to a running gateway: Flight SQL with
//! meshgate's login, role header and catalog service.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use meshgate_proto::catalog;
use meshgate_proto::catalog::catalog_service_client::CatalogServiceClient;

use meshgate_server::ROLE_HEADER;
use meshgate_server::http2::{CONNECTION_WINDOW, MAX_FRAME, STREAM_WINDOW};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    /// The server's own words (status message), without transport noise.
    #[error("{0}")]
    Server(String),
}

fn status(s: tonic::Status) -> ClientError {
    ClientError::from(FlightError::Tonic(Box::new(s)))
}

impl From<FlightError> for ClientError {
    fn from(e: FlightError) -> Self {
        ClientError::Server(match e {
            FlightError::Tonic(s) => {
                let name = code_name(s.code());
                if s.message().to_lowercase().starts_with(name) {
                    s.message().to_string()
                } else {
                    format!("{name}: {}", s.message())
                }
            }
            other => other.to_string(),
        })
    }
}

impl From<arrow::error::ArrowError> for ClientError {
    fn from(e: arrow::error::ArrowError) -> Self {
        ClientError::Server(e.to_string())
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => "unauthenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::InvalidArgument => "invalid query",
        tonic::Code::FailedPrecondition => "unavailable product",
        tonic::Code::ResourceExhausted => "server busy",
        tonic::Code::DeadlineExceeded => "timeout",
        tonic::Code::Unavailable => "server unavailable",
        _ => "error",
    }
}

/// An endpoint tuned for Flight: large windows and frames, no Nagle delay.
///
/// Takes the URL spellings Flight clients use: `grpc://` and `grpc+tcp://` are plaintext,
/// `grpc+tls://` (or `https://`) is TLS, verified against `tls_ca` (PEM) when given and
/// the system's roots otherwise.
pub fn endpoint(url: &str, tls_ca: Option<&[u8]>) -> Result<Endpoint, tonic::transport::Error> {
    let (url, tls) = if let Some(rest) = url.strip_prefix("grpc+tls://") {
        (format!("https://{rest}"), true)
    } else if let Some(rest) = url
        .strip_prefix("grpc+tcp://")
        .or_else(|| url.strip_prefix("grpc://"))
    {
        (format!("http://{rest}"), false)
    } else {
        (url.to_string(), url.starts_with("https://"))
    };
    let mut endpoint = Endpoint::from_shared(url)?;
    if tls {
        let config = match tls_ca {
            Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
            None => ClientTlsConfig::new().with_native_roots(),
        };
        endpoint = endpoint.tls_config(config)?;
    }
    Ok(endpoint
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME))
}

pub struct MeshClient {
    inner: FlightSqlServiceClient<Channel>,
    channel: Channel,
    role: Option<String>,
}

impl MeshClient {
    /// Connects and authenticates; `role` narrows the session to one of the user's roles.
    pub async fn connect(
        url: &str,
        tls_ca: Option<&[u8]>,
        user: &str,
        password: &str,
        role: Option<&str>,
    ) -> Result<MeshClient, ClientError> {
        let connect_err = |message: String| ClientError::Connect {
            url: url.to_string(),
            message,
        };
        let channel = endpoint(url, tls_ca)
            .map_err(|e| connect_err(e.to_string()))?
            .connect()
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let mut inner = FlightSqlServiceClient::new(channel.clone());
        if let Some(role) = role {
            inner.set_header(ROLE_HEADER, role);
        }
        inner.handshake(user, password).await.map_err(|e| match e {
            FlightError::Arrow(arrow::error::ArrowError::IpcError(m))
                if m.contains("handshake") =>
            {
                ClientError::Server(format!(
                    "authentication failed for {user}: invalid user name or password"
                ))
            }
            other => ClientError::from(other),
        })?;
        Ok(MeshClient {
            inner,
            channel,
            role: role.map(str::to_string),
        })
    }

    /// A catalog request carrying this session's token (and role narrowing).
    fn catalog_request<T>(&self, message: T) -> Result<tonic::Request<T>, ClientError> {
        let mut req = tonic::Request::new(message);
        let token = self
            .inner
            .token()
            .ok_or_else(|| ClientError::Server("not authenticated".into()))?;
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::Server("malformed token".into()))?;
        req.metadata_mut().insert("authorization", bearer);
        if let Some(role) = &self.role
            && let Ok(v) = role.parse()
        {
            req.metadata_mut().insert(ROLE_HEADER, v);
        }
        Ok(req)
    }

    /// Products of the catalog API; `domain` and `search` may be empty.
    pub async fn list_products(
        &self,
        domain: &str,
        search: &str,
    ) -> Result<Vec<catalog::ProductSummary>, ClientError> {
        let req = self.catalog_request(catalog::ListProductsRequest {
            domain: domain.into(),
            search: search.into(),
        })?;
        let mut client = CatalogServiceClient::new(self.channel.clone());
        let resp = client.list_products(req).await.map_err(status)?;
        Ok(resp.into_inner().products)
    }

    pub async fn describe_product(
        &self,
        name: &str,
    ) -> Result<catalog::ProductDetail, ClientError> {
        let req = self.catalog_request(catalog::DescribeProductRequest { name: name.into() })?;
        let mut client = CatalogServiceClient::new(self.channel.clone());
        Ok(client
            .describe_product(req)
            .await
            .map_err(status)?
            .into_inner())
    }

    /// Runs one statement; the schema comes first, then the batches as they stream.
    pub async fn query(
        &mut self,
        sql: &str,
    ) -> Result<
        (
            SchemaRef,
            impl Stream<Item = Result<RecordBatch, ClientError>> + use<>,
        ),
        ClientError,
    > {
        let info = self.inner.execute(sql.to_string(), None).await?;
        let schema = info.clone().try_decode_schema()?;
        let mut streams = Vec::new();
        for endpoint in info.endpoint {
            let ticket = endpoint
                .ticket
                .ok_or_else(|| ClientError::Server("endpoint without a ticket".into()))?;
            streams.push(self.inner.do_get(ticket).await?);
        }
        let batches = futures::stream::iter(streams)
            .flatten()
            .map_err(ClientError::from);
        Ok((std::sync::Arc::new(schema), batches))
    }
}
