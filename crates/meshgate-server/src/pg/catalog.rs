//! `pg_catalog` and the functions Postgres clients call on connect and to reflect tables
//! (`version()`, `current_schema()`, `format_type`, `pg_get_expr`…), from
//! datafusion-pg-catalog, added to every session.
//!
//! Its tables are built from the session's own catalog, so `pg_class` and `pg_attribute`
//! list exactly what `information_schema` lists to that caller, in the types the caller
//! reads (a hashed number is text). They hold metadata only: the verifier lets a plan
//! read them because they are not products, and they are registered as a metadata schema
//! that no domain can stand in for.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::scalar::ScalarValue;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables,
};
use meshgate_mesh::CATALOG;
use meshgate_policy::MeshSession;

use crate::query::{QueryError, SessionSetup};

/// Builds sessions' `pg_catalog`; the static tables (PostgreSQL's own rows) are read once.
pub struct PgCatalog {
    tables: Arc<PgCatalogStaticTables>,
}

impl PgCatalog {
    pub fn new() -> Result<PgCatalog, QueryError> {
        let tables = PgCatalogStaticTables::try_new()
            .map_err(|e| QueryError::internal(&format!("pg_catalog's tables: {e}")))?;
        Ok(PgCatalog {
            tables: Arc::new(tables),
        })
    }
}

impl SessionSetup for PgCatalog {
    fn setup(&self, session: &MeshSession) -> Result<(), QueryError> {
        let ctx = session.context();
        let schema = PgCatalogSchemaProvider::try_new(
            Arc::clone(ctx.state().catalog_list()),
            Arc::clone(&self.tables),
            EmptyContextProvider,
        )?;
        ctx.catalog(CATALOG)
            .ok_or_else(|| QueryError::internal("a session without the mesh catalog"))?
            .register_schema("pg_catalog", Arc::new(schema))?;
        for udf in [
            pg::create_current_database_udf(CATALOG),
            pg::create_current_schema_udf(),
            pg::create_current_schemas_udf(),
            pg::create_pg_get_userbyid_udf(),
            pg::has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
            pg::has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
            pg::has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
            pg::has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
            pg::create_pg_table_is_visible(),
            pg::format_type::create_format_type_udf(),
            pg::create_session_user_udf(),
            pg::pg_get_expr_udf::create_pg_get_expr_udf(),
            pg::create_pg_get_partkeydef_udf(),
            pg::create_pg_relation_is_publishable_udf(),
            pg::create_pg_get_statisticsobjdef_columns_udf(),
            pg::create_pg_encoding_to_char_udf(),
            pg::create_pg_backend_pid_udf(),
            pg::create_pg_relation_size_udf(),
            pg::create_pg_total_relation_size_udf(),
            pg::create_pg_stat_get_numscans(),
            pg::create_pg_get_constraintdef(),
            pg::create_pg_get_partition_ancestors_udf(),
            pg::quote_ident_udf::create_quote_ident_udf(),
            pg::quote_ident_udf::create_parse_ident_udf(),
            pg::array_bounds_udf::create_array_upper_udf(),
            pg::array_bounds_udf::create_array_lower_udf(),
            version_udf(),
            type_is_visible_udf(),
        ] {
            ctx.register_udf(udf);
        }
        ctx.register_udtf(
            "pg_get_keywords",
            Arc::clone(&self.tables.pg_get_keywords) as _,
        );
        // `regclass`, `regtype`… as type names, so catalog queries parse.
        let state = ctx.state_ref();
        let existing = state.read().clone();
        *state.write() = SessionStateBuilder::new_from_existing(existing)
            .with_type_planner(Arc::new(pg::oid_type_planner::PgOidTypePlanner))
            .build();
        pg::generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(ctx);
        Ok(())
    }
}

/// `pg_type_is_visible(oid)`: every type is (SQLAlchemy's reflection asks, for domains).
fn type_is_visible_udf() -> ScalarUDF {
    create_udf(
        "pg_type_is_visible",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            Ok(match &args[0] {
                ColumnarValue::Scalar(v) => {
                    ColumnarValue::Scalar(ScalarValue::Boolean((!v.is_null()).then_some(true)))
                }
                ColumnarValue::Array(a) => {
                    let visible: datafusion::arrow::array::BooleanArray = (0..a.len())
                        .map(|i| a.is_valid(i).then_some(true))
                        .collect();
                    ColumnarValue::Array(Arc::new(visible))
                }
            })
        }),
    )
}

/// `version()` as PostgreSQL words it: drivers and SQLAlchemy read the version from it.
fn version_udf() -> ScalarUDF {
    let text = format!(
        "PostgreSQL {} (meshgate {} on Apache DataFusion {})",
        super::SERVER_VERSION,
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}
