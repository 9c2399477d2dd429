//! What one role may see of the mesh, worked out without meshgate's enforcement: the raw
//! files read by the platform's own session, the grant resolved from the contract's text,
//! the row filter applied as plain SQL, masks applied by the mask kernels. From it come
//! the tables of a plain DataFusion session (the differential oracle) and the facts the
//! role must never learn (raw values, hidden rows' values, counts and sizes, paths).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use meshgate_contract::{Contract, MaskKind, Permission};
use meshgate_mesh::{CATALOG, ContractTable, Mesh};
use meshgate_policy::{HashKey, Principal};

/// A product's domain, SQL names and table, by display name.
type Named = (
    String,
    Vec<String>,
    Arc<dyn datafusion::catalog::TableProvider>,
);

/// One product as a role sees it; `None` when the role holds no grant on it.
pub struct ProductView {
    pub domain: String,
    /// Every SQL name it answers to (`dataset`, `dataset_vN`).
    pub names: Vec<String>,
    pub display: String,
    pub visible: Option<RecordBatch>,
    pub masked_columns: Vec<String>,
    pub row_filtered: bool,
}

pub struct RoleView {
    pub principal: Principal,
    pub products: Vec<ProductView>,
    pub forbidden: Forbidden,
}

/// The facts a role must never learn, as needles for every byte that leaves the gateway.
pub struct Forbidden {
    /// Raw values of masked columns and values of hidden rows that the role sees nowhere
    /// else; checked everywhere.
    pub values: Vec<String>,
    /// Counts and sizes of rows a row filter hides, and row counts of products the role
    /// may not read; checked outside result rows (EXPLAIN, errors, metadata, audit).
    pub counts: Vec<String>,
    /// Absolute server paths; checked everywhere.
    pub paths: Vec<String>,
    everywhere: AhoCorasick,
    numbers: AhoCorasick,
}

impl Forbidden {
    fn new(values: Vec<String>, counts: Vec<String>, paths: Vec<String>) -> Forbidden {
        let everywhere: Vec<&String> = values.iter().chain(&paths).collect();
        Forbidden {
            everywhere: AhoCorasick::new(everywhere).unwrap(),
            numbers: AhoCorasick::new(&counts).unwrap(),
            values,
            counts,
            paths,
        }
    }

    /// A forbidden value or path in `text` (result rows), if any.
    pub fn in_rows(&self, text: &str) -> Option<String> {
        self.in_answer_to("", text, true)
    }

    /// A forbidden value, count or path in `text` (anything but result rows), if any.
    pub fn in_metadata(&self, text: &str) -> Option<String> {
        self.in_answer_to("", text, false)
    }

    /// Like `in_rows` (`rows`) or `in_metadata`, ignoring what `asked` contains: a caller
    /// who wrote a value in its own SQL learns nothing when it comes back. Counts and
    /// sizes match as whole numbers only (`20000`, not part of a hash or an id).
    pub fn in_answer_to(&self, asked: &str, text: &str, rows: bool) -> Option<String> {
        let bytes = text.as_bytes();
        let word = |i: Option<usize>| {
            i.and_then(|i| bytes.get(i))
                .is_some_and(u8::is_ascii_alphanumeric)
        };
        // A value written in hex digits only (an id like `C001497`) inside a longer run of
        // them is part of a hash, not the value.
        let hex = |i: Option<usize>| {
            i.and_then(|i| bytes.get(i))
                .is_some_and(u8::is_ascii_hexdigit)
        };
        let found = self
            .everywhere
            .find_overlapping_iter(text)
            .filter(|m| {
                let v = &text[m.start()..m.end()];
                !(v.bytes().all(|b| b.is_ascii_hexdigit())
                    && (hex(m.start().checked_sub(1)) || hex(Some(m.end()))))
            })
            .map(|m| &text[m.start()..m.end()])
            .find(|v| !asked.contains(v));
        if found.is_some() || rows {
            return found.map(str::to_string);
        }
        self.numbers
            .find_overlapping_iter(text)
            .filter(|m| !word(m.start().checked_sub(1)) && !word(Some(m.end())))
            .map(|m| &text[m.start()..m.end()])
            .find(|v| !asked.contains(v))
            .map(str::to_string)
    }
}

/// Strings shorter than this are too common to tell anything (`EU`, `gold`, `42`).
const MIN_NEEDLE: usize = 6;

pub fn format_value(array: &ArrayRef, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    let f = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default()).ok()?;
    Some(f.value(row).to_string())
}

fn strings(batch: &RecordBatch, columns: impl Fn(&Field) -> bool) -> HashSet<String> {
    let mut out = HashSet::new();
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        if !columns(field) {
            continue;
        }
        for row in 0..array.len() {
            if let Some(v) = format_value(array, row) {
                out.insert(v);
            }
        }
    }
    out
}

fn is_texty(f: &Field) -> bool {
    matches!(
        f.data_type(),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Date32
    )
}

impl RoleView {
    pub async fn compute(mesh: &Mesh, principal: Principal, key: &HashKey) -> RoleView {
        let trusted = mesh.session_context();
        let catalog = mesh.catalog();
        // Product → its SQL names, from the catalog the gateway serves.
        let mut names: BTreeMap<String, Named> = BTreeMap::new();
        for domain in catalog.schema_names() {
            let schema = catalog.schema(&domain).unwrap();
            for name in schema.table_names() {
                let Ok(Some(t)) = schema.table(&name).await else {
                    continue;
                };
                let Some(ct) = ContractTable::from_provider(t.as_ref()) else {
                    continue;
                };
                let display = ct.product().display_name();
                names
                    .entry(display)
                    .or_insert_with(|| (domain.clone(), vec![], Arc::clone(&t)))
                    .1
                    .push(name);
            }
        }

        let governance = mesh
            .config()
            .governance_file()
            .map(|f| serde_yaml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
            .unwrap_or(serde_yaml::Value::Null);
        let mut products = Vec::new();
        let mut raw_forbidden: HashSet<String> = HashSet::new();
        let mut visible_strings: HashSet<String> = HashSet::new();
        let mut counts: HashSet<String> = HashSet::new();
        let mut visible_counts: HashSet<String> = HashSet::new();
        for (display, (domain, table_names, provider)) in names {
            let contract = ContractTable::from_provider(provider.as_ref())
                .unwrap()
                .product()
                .contract
                .clone();
            let location = ContractTable::from_provider(provider.as_ref())
                .unwrap()
                .product()
                .location
                .clone();
            let raw = collect(&trusted, Arc::clone(&provider)).await;
            let pii: HashSet<String> = contract
                .schema
                .iter()
                .filter(|c| c.is_pii())
                .map(|c| c.name.as_str().to_string())
                .collect();
            // The grant, from the contract's text under governance.yaml's policies read as
            // plain YAML: a denied role is dropped, the most permissive level left wins;
            // among its roles a row is visible if any role's filters (all of them) let it
            // through, and a column takes the meet of their masks.
            let roles = governed_roles(&contract, &domain, &governance);
            let held: Vec<&GovernedRole> = roles
                .iter()
                .filter(|r| principal.roles.contains(&r.role))
                .collect();
            let Some(permission) = held.iter().map(|r| r.permission).max() else {
                // No grant: no values of PII columns, no count.
                raw_forbidden.extend(strings(&raw, |f| pii.contains(f.name()) && is_texty(f)));
                counts.insert(raw.num_rows().to_string());
                products.push(ProductView {
                    domain,
                    names: table_names,
                    display,
                    visible: None,
                    masked_columns: vec![],
                    row_filtered: false,
                });
                continue;
            };
            let top: Vec<&GovernedRole> = held
                .into_iter()
                .filter(|r| r.permission == permission)
                .collect();
            let filters: Vec<Option<String>> = top
                .iter()
                .map(|r| {
                    (!r.filters.is_empty()).then(|| {
                        r.filters
                            .iter()
                            .map(|f| format!("({})", with_attributes(f, &principal)))
                            .collect::<Vec<_>>()
                            .join(" AND ")
                    })
                })
                .collect();
            let filter = if filters.iter().any(Option::is_none) {
                None
            } else {
                Some(
                    filters
                        .into_iter()
                        .flatten()
                        .map(|f| format!("({f})"))
                        .collect::<Vec<_>>()
                        .join(" OR "),
                )
            };
            let rows = match &filter {
                None => raw.clone(),
                Some(f) => {
                    let ctx = SessionContext::new();
                    ctx.register_batch("raw", raw.clone()).unwrap();
                    let batches = ctx
                        .sql(&format!("SELECT * FROM raw WHERE {f}"))
                        .await
                        .unwrap()
                        .collect()
                        .await
                        .unwrap();
                    concat_batches(&raw.schema(), &batches).unwrap()
                }
            };
            let mut masks: Vec<(String, MaskKind)> = Vec::new();
            for c in &contract.schema {
                let name = c.name.as_str();
                let per_role: Vec<Option<MaskKind>> =
                    top.iter().map(|r| r.masks.get(name).copied()).collect();
                if let Some(m) = per_role.into_iter().flatten().reduce(meet) {
                    masks.push((name.to_string(), m));
                }
            }
            let masked_names: HashSet<&str> = masks.iter().map(|(c, _)| c.as_str()).collect();
            let visible = mask(&rows, &masks, key);
            visible_strings.extend(strings(&visible, |_| true));
            // Hidden rows: everything they hold; masked columns: their raw values.
            if filter.is_some() {
                let hidden = raw.num_rows() - rows.num_rows();
                counts.insert(raw.num_rows().to_string());
                counts.insert(hidden.to_string());
                counts.extend(file_sizes(&location));
                visible_counts.insert(rows.num_rows().to_string());
                let kept = strings(&rows, |_| true);
                raw_forbidden.extend(
                    strings(&raw, is_texty)
                        .into_iter()
                        .filter(|v| !kept.contains(v)),
                );
            } else {
                visible_counts.insert(raw.num_rows().to_string());
            }
            raw_forbidden.extend(strings(&rows, |f| {
                masked_names.contains(f.name().as_str()) && is_texty(f)
            }));
            products.push(ProductView {
                domain,
                names: table_names,
                display,
                visible: Some(visible),
                masked_columns: masks.into_iter().map(|(c, _)| c).collect(),
                row_filtered: filter.is_some(),
            });
        }
        let mut values: Vec<String> = raw_forbidden
            .into_iter()
            .filter(|v| v.len() >= MIN_NEEDLE && !visible_strings.contains(v))
            .collect();
        values.sort();
        let mut counts: Vec<String> = counts
            .into_iter()
            .filter(|c| c.len() >= 4 && !visible_counts.contains(c))
            .collect();
        counts.sort();
        let repo = super::repo().display().to_string();
        let paths = vec![repo.clone(), repo.trim_start_matches('/').to_string()];
        RoleView {
            principal,
            products,
            forbidden: Forbidden::new(values, counts, paths),
        }
    }

    /// A plain DataFusion session holding exactly what the role sees: the oracle.
    pub fn plain_context(&self) -> SessionContext {
        let ctx = SessionContext::new_with_config(
            SessionConfig::new()
                .with_create_default_catalog_and_schema(false)
                .with_default_catalog_and_schema(CATALOG, "default")
                .with_target_partitions(2),
        );
        let catalog = Arc::new(MemoryCatalogProvider::new());
        for p in &self.products {
            let Some(batch) = &p.visible else { continue };
            if catalog.schema(&p.domain).is_none() {
                catalog
                    .register_schema(&p.domain, Arc::new(MemorySchemaProvider::new()))
                    .unwrap();
            }
            let schema = catalog.schema(&p.domain).unwrap();
            for name in &p.names {
                let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap();
                schema
                    .register_table(name.clone(), Arc::new(table))
                    .unwrap();
            }
        }
        ctx.register_catalog(CATALOG, catalog);
        ctx
    }
}

async fn collect(
    ctx: &SessionContext,
    table: Arc<dyn datafusion::catalog::TableProvider>,
) -> RecordBatch {
    let schema = table.schema();
    let batches = ctx.read_table(table).unwrap().collect().await.unwrap();
    concat_batches(&schema, &batches).unwrap()
}

/// The columns of `rows` with `masks` applied, typed as masked (all nullable).
fn mask(
    rows: &RecordBatch,
    masks: &[(String, meshgate_contract::MaskKind)],
    key: &HashKey,
) -> RecordBatch {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, array) in rows.schema().fields().iter().zip(rows.columns()) {
        match masks.iter().find(|(c, _)| c == field.name()) {
            Some((_, kind)) => {
                let masked = meshgate_policy::masks::apply(*kind, key, array).unwrap();
                fields.push(Field::new(field.name(), masked.data_type().clone(), true));
                columns.push(masked);
            }
            None => {
                fields.push(field.as_ref().clone().with_nullable(true));
                columns.push(Arc::clone(array));
            }
        }
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, columns).unwrap()
}

/// One granted role of a product once governance's policies apply.
struct GovernedRole {
    role: String,
    permission: Permission,
    masks: BTreeMap<String, MaskKind>,
    /// Every one must hold.
    filters: Vec<String>,
}

/// Two masks on one value: the same one, `null` over anything, otherwise `redact`.
fn meet(a: MaskKind, b: MaskKind) -> MaskKind {
    if a == b {
        a
    } else if a == MaskKind::Null || b == MaskKind::Null {
        MaskKind::Null
    } else {
        MaskKind::Redact
    }
}

/// `governance.yaml`'s `policies:` applied to a contract's grants, from the YAML text.
fn governed_roles(
    contract: &Contract,
    domain: &str,
    governance: &serde_yaml::Value,
) -> Vec<GovernedRole> {
    let strs = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let empty = Vec::new();
    let policies = governance["policies"].as_sequence().unwrap_or(&empty);
    let mut out: Vec<GovernedRole> = Vec::new();
    for g in &contract.access_policy {
        let role = g.role.as_str();
        if out.iter().any(|r| r.role == role) {
            continue;
        }
        let mut r = GovernedRole {
            role: role.to_string(),
            permission: g.permission,
            masks: BTreeMap::new(),
            filters: g.row_filter.iter().cloned().collect(),
        };
        if g.permission == Permission::ReadMasked {
            for c in contract.schema.iter().filter(|c| c.pii == Some(true)) {
                r.masks.insert(
                    c.name.as_str().to_string(),
                    c.mask.unwrap_or(MaskKind::Hash),
                );
            }
        }
        let mut denied = false;
        for p in policies {
            let tags = strs(&p["match"]["tags"]);
            let domains = strs(&p["match"]["domains"]);
            let binds = match p.get("roles") {
                Some(roles) => strs(roles).iter().any(|x| x == role),
                None => true,
            } && !strs(&p["except_roles"]).iter().any(|x| x == role);
            let tagged: Vec<&str> = contract
                .schema
                .iter()
                .filter(|c| c.tags.iter().any(|t| tags.iter().any(|x| x == t.as_str())))
                .map(|c| c.name.as_str())
                .collect();
            let matches = (domains.is_empty() || domains.iter().any(|d| d == domain))
                && (tags.is_empty() || !tagged.is_empty());
            if !(binds && matches) {
                continue;
            }
            if p["deny"].as_bool() == Some(true) {
                denied = true;
            }
            if let Some(f) = p["row_filter"].as_str() {
                r.filters.push(f.to_string());
            }
            if let Some(m) = p["mask"].as_str() {
                let m: MaskKind = serde_yaml::from_str(m).unwrap();
                for c in &tagged {
                    let ty = contract.column(c).unwrap().data_type;
                    let m = if m.fits(&ty) { m } else { MaskKind::Redact };
                    let merged = r.masks.get(*c).map_or(m, |old| meet(*old, m));
                    r.masks.insert(c.to_string(), merged);
                }
            }
        }
        if !denied {
            out.push(r);
        }
    }
    out
}

/// The sizes of a local product's files, as EXPLAIN would print byte ranges.
fn file_sizes(location: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(location) else {
        return vec![];
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len().to_string())
        .collect()
}

/// A row filter with the caller's `:user.<name>` references written out as quoted values,
/// by text (the oracle's own way; the gateway binds typed literals instead); a missing
/// attribute makes the filter `false`.
fn with_attributes(filter: &str, principal: &meshgate_policy::Principal) -> String {
    let re = regex::Regex::new(r":user\.([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    let mut missing = false;
    let out = re.replace_all(filter, |c: &regex::Captures| {
        match principal.attributes.get(&c[1]) {
            Some(values) if !values.is_empty() => values
                .iter()
                .map(|v| format!("'{}'", v.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(", "),
            _ => {
                missing = true;
                "NULL".to_string()
            }
        }
    });
    if missing {
        "false".to_string()
    } else {
        out.into_owned()
    }
}
