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

use std::sync::Weak;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::scalar::ScalarValue;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables,
};
use meshgate_mesh::{CATALOG, ContractTable};
use meshgate_policy::{CallerTable, MeshSession};

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
        let schema = WithDescriptions {
            inner: Arc::new(schema),
            state: Arc::downgrade(&ctx.state_ref()),
            view: tokio::sync::OnceCell::new(),
            extended: Default::default(),
            descriptions: tokio::sync::OnceCell::new(),
        };
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
        ]
        .into_iter()
        .chain(super::describe::udfs())
        {
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

/// The contracts' descriptions, as a table `pg_description` is a view over.
const DESCRIPTIONS: &str = "meshgate_descriptions";

/// `pg_description` from the contracts: each product's description on its table (`objsubid`
/// 0) and each column's on the column, keyed by the oids `pg_class` and `pg_attribute` give
/// them in this session. This is what SQLAlchemy's reflection (Superset), PgJDBC's
/// `REMARKS` (DBeaver, Metabase) and psql read as comments.
const DESCRIPTION_VIEW: &str = "SELECT c.oid AS objoid, CAST(1259 AS INT) AS classoid, \
     CAST(COALESCE(a.attnum, 0) AS INT) AS objsubid, d.description AS description \
     FROM pg_catalog.meshgate_descriptions d \
     JOIN pg_catalog.pg_namespace n ON n.nspname = d.schema_name \
     JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = d.table_name \
     LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = d.column_name";

/// Columns psql's describe commands read that datafusion-pg-catalog's tables lack or type
/// otherwise than PostgreSQL, as views over them under hidden names: `pg_class.reloptions`
/// (`\d+`) and `pg_namespace.nspacl` as an array (`\dn+`). No relation has storage
/// options and no schema an ACL (access is the contracts' to say): NULL, as PostgreSQL
/// shows defaults.
const EXTENDED: [(&str, &str, &str); 2] = [
    (
        "pg_class",
        "meshgate_pg_class",
        "SELECT c.*, CAST(NULL AS VARCHAR[]) AS reloptions FROM pg_catalog.meshgate_pg_class c",
    ),
    (
        "pg_namespace",
        "meshgate_pg_namespace",
        "SELECT n.oid, n.nspname, n.nspowner, CAST(NULL AS VARCHAR[]) AS nspacl, n.options \
         FROM pg_catalog.meshgate_pg_namespace n",
    ),
];

/// datafusion-pg-catalog's `pg_catalog` with `pg_description` from the contracts.
struct WithDescriptions {
    inner: Arc<dyn SchemaProvider>,
    /// The session, to plan the view in (weak: the session holds this schema).
    state: Weak<parking_lot::RwLock<SessionState>>,
    view: tokio::sync::OnceCell<Arc<dyn TableProvider>>,
    /// [`EXTENDED`]'s views, planned once per session.
    extended: [tokio::sync::OnceCell<Arc<dyn TableProvider>>; 2],
    /// The descriptions, read once per session (a session lives for one mesh snapshot).
    descriptions: tokio::sync::OnceCell<Arc<dyn TableProvider>>,
}

impl std::fmt::Debug for WithDescriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("pg_catalog")
    }
}

impl WithDescriptions {
    fn state(&self) -> Result<SessionState> {
        let state = self
            .state
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("the session is gone".into()))?;
        Ok(state.read().clone())
    }

    /// The view of `sql`, planned in this session the first time it is read.
    async fn view(
        &self,
        cell: &tokio::sync::OnceCell<Arc<dyn TableProvider>>,
        sql: &str,
    ) -> Result<Arc<dyn TableProvider>> {
        let view = cell
            .get_or_try_init(|| async {
                let plan = self.state()?.create_logical_plan(sql).await?;
                Ok::<_, DataFusionError>(
                    Arc::new(ViewTable::new(plan, Some(sql.to_string()))) as Arc<dyn TableProvider>
                )
            })
            .await?;
        Ok(Arc::clone(view))
    }

    /// Every served product's and column's description, as the caller's catalog lists them.
    async fn descriptions(&self) -> Result<Arc<dyn TableProvider>> {
        let state = self.state()?;
        let (mut schemas, mut tables, mut columns, mut texts) = (vec![], vec![], vec![], vec![]);
        if let Some(mesh) = state.catalog_list().catalog(CATALOG) {
            for domain in mesh.schema_names() {
                let Some(schema) = mesh.schema(&domain) else {
                    continue;
                };
                for name in schema.table_names() {
                    let Some(table) = schema.table(&name).await? else {
                        continue;
                    };
                    let product = CallerTable::from_provider(table.as_ref())
                        .map_or(table.as_ref(), |view| view.product_table().as_ref());
                    let Some(ct) = ContractTable::from_provider(product) else {
                        continue;
                    };
                    let contract = &ct.product().contract;
                    let mut add = |column: Option<&str>, text: &str| {
                        schemas.push(domain.clone());
                        tables.push(name.clone());
                        columns.push(column.map(str::to_string));
                        texts.push(text.to_string());
                    };
                    if let Some(d) = &contract.description {
                        add(None, d);
                    }
                    for c in &contract.schema {
                        if let Some(d) = c.comment() {
                            add(Some(&c.name.to_string()), &d);
                        }
                    }
                }
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("schema_name", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("column_name", DataType::Utf8, true),
            Field::new("description", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(schemas)),
                Arc::new(StringArray::from(tables)),
                Arc::new(StringArray::from(columns)),
                Arc::new(StringArray::from(texts)),
            ],
        )?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}

#[async_trait::async_trait]
impl SchemaProvider for WithDescriptions {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match name {
            DESCRIPTIONS => self
                .descriptions
                .get_or_try_init(|| self.descriptions())
                .await
                .map(|t| Some(Arc::clone(t))),
            "pg_description" => self.view(&self.view, DESCRIPTION_VIEW).await.map(Some),
            _ => {
                if let Some((i, (_, _, sql))) = EXTENDED
                    .iter()
                    .enumerate()
                    .find(|(_, (public, _, _))| *public == name)
                {
                    return self.view(&self.extended[i], sql).await.map(Some);
                }
                match EXTENDED.iter().find(|(_, hidden, _)| *hidden == name) {
                    Some((public, _, _)) => self.inner.table(public).await,
                    None => self.inner.table(name).await,
                }
            }
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        name == DESCRIPTIONS
            || EXTENDED.iter().any(|(_, hidden, _)| *hidden == name)
            || self.inner.table_exist(name)
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
