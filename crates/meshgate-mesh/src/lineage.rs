//! Products built from products: which inputs and columns each column of a derived
//! product comes from, and the rules that follow from it.
//!
//! Lineage is read from the plan of the derived product's SQL, planned over the contracts
//! alone (every product as an empty table with its contract's columns), so `meshgate lint`
//! and `diff` know it without data, and a served mesh knows it before anything runs. The
//! walk is conservative: an operator it does not know makes each of its output columns
//! come from every column of its inputs, so a PII source is never lost on the way.
//!
//! The rule it enforces: an output column that comes from a PII column is PII in the
//! derived contract (so masks apply again downstream), whatever the author's grant let
//! them read. A derived product that breaks it, that does not plan, or that depends on
//! itself is quarantined and never refreshed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::compute::can_cast_types;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::catalog::{MemoryCatalogProvider, MemorySchemaProvider, Session};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::source_as_provider;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::utils::{grouping_set_to_exprlist, split_conjunction};
use datafusion::logical_expr::{Distinct, Expr, JoinType, LogicalPlan, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use meshgate_contract::Contract;
use serde::Serialize;

use crate::CATALOG;

/// A product version as the mesh names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ProductRef {
    pub domain: String,
    pub dataset: String,
    pub version: u32,
}

impl fmt::Display for ProductRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} v{}", self.domain, self.dataset, self.version)
    }
}

/// One column of one product.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ColumnRef {
    pub product: ProductRef,
    pub column: String,
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{} (v{})",
            self.product.domain, self.product.dataset, self.column, self.product.version
        )
    }
}

/// A contract of the mesh, as lineage needs it.
pub struct Declared<'a> {
    pub domain: &'a str,
    pub contract: &'a Contract,
    pub file: PathBuf,
    /// Where its data is published, when that is a local folder.
    pub location: Option<PathBuf>,
}

/// What a derived product is built from, and what is wrong with it.
#[derive(Debug, Clone, Serialize)]
pub struct Derivation {
    pub product: ProductRef,
    pub owner: String,
    pub contract_file: PathBuf,
    /// Where the refresher publishes it (a local folder); `None` for an object store,
    /// where publishing is not supported.
    pub location: Option<PathBuf>,
    pub sql: String,
    pub refresh: std::time::Duration,
    /// Every product the SQL reads, and whether it names the newest version (`dataset`)
    /// rather than a pinned one (`dataset_vN`): a new major version changes its input.
    pub inputs: BTreeMap<ProductRef, bool>,
    /// Each column of the result, with the input columns its values come from.
    pub columns: Vec<(String, BTreeSet<ColumnRef>)>,
    /// Why it cannot be refreshed or served; empty when it can.
    pub problems: Vec<String>,
    /// What its data depends on in the contract ([`data_digest`]): data computed under
    /// another digest is not served.
    pub digest: String,
}

impl Derivation {
    /// The input columns `column` comes from.
    pub fn sources(&self, column: &str) -> impl Iterator<Item = &ColumnRef> {
        self.columns
            .iter()
            .filter(move |(c, _)| c == column)
            .flat_map(|(_, s)| s.iter())
    }
}

/// A derived column a change to an input would reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reached {
    pub product: ProductRef,
    pub owner: String,
    /// The derived product's column, and the input column it comes from; `None` when the
    /// whole product is reached (the input is renamed, or a new major version replaces
    /// the one it reads by its newest name).
    pub column: Option<(String, ColumnRef)>,
}

/// The lineage of every derived product of a mesh.
#[derive(Debug, Default)]
pub struct Lineage {
    derived: BTreeMap<ProductRef, Derivation>,
}

impl Lineage {
    /// Plans every derived contract among `contracts` over the others' declared columns.
    pub async fn of(contracts: &[Declared<'_>]) -> Lineage {
        let mut lineage = Lineage::default();
        if contracts.iter().all(|d| d.contract.source.is_none()) {
            return lineage;
        }
        let shapes = Shapes::of(contracts);
        let ctx = shapes.context();
        for d in contracts {
            let Some(source) = &d.contract.source else {
                continue;
            };
            let product = product_ref(d.domain, d.contract);
            let mut derivation = Derivation {
                product: product.clone(),
                owner: d.contract.owner.as_str().to_string(),
                contract_file: d.file.clone(),
                location: d.location.clone(),
                sql: source.sql.clone(),
                refresh: source.refresh.0,
                inputs: BTreeMap::new(),
                columns: Vec::new(),
                problems: Vec::new(),
                digest: data_digest(d.contract),
            };
            // Optimized: correlated subqueries become joins whose predicates the walk
            // sees; what cannot be decorrelated is refused below.
            let state = ctx.state();
            let planned = match state.create_logical_plan(&source.sql).await {
                Ok(plan) => state.optimize(&plan),
                Err(e) => Err(e),
            };
            match planned {
                Ok(plan) if has_outer_references(&plan) => derivation.problems.push(
                    "source.sql has a correlated subquery meshgate cannot trace to its \
                     columns: write it as a join"
                        .into(),
                ),
                Ok(plan) => {
                    collect_inputs(&plan, &mut derivation.inputs);
                    match column_lineage(&plan) {
                        Ok(columns) => {
                            derivation.columns = plan
                                .schema()
                                .fields()
                                .iter()
                                .map(|f| f.name().clone())
                                .zip(columns)
                                .collect();
                            check(
                                &derivation_schema(&plan),
                                d.contract,
                                &shapes,
                                &mut derivation,
                            );
                        }
                        Err(e) => derivation
                            .problems
                            .push(format!("cannot read the lineage of source.sql: {e}")),
                    }
                }
                Err(e) => derivation.problems.push(format!(
                    "source.sql does not plan over the mesh's contracts: {}",
                    e.strip_backtrace()
                )),
            }
            lineage.derived.insert(product, derivation);
        }
        lineage.refuse_cycles();
        lineage
    }

    /// The lineage of the contracts under `dir` (`<domain>/<contract>.yaml`), from the
    /// contracts alone: what `lint` and `diff` check before anything is served. Contracts
    /// that do not parse are left out (lint reports them on their own).
    pub async fn of_folder(dir: &std::path::Path) -> std::io::Result<Lineage> {
        let mut parsed = Vec::new();
        for file in crate::contract_files(dir)? {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let Ok(contract) = meshgate_contract::parse_contract(&file, &text) else {
                continue;
            };
            let folder = file
                .strip_prefix(dir)
                .ok()
                .filter(|rel| rel.components().count() > 1)
                .and_then(|rel| rel.components().next())
                .and_then(|c| c.as_os_str().to_str().map(str::to_string));
            let Some(domain) =
                folder.or_else(|| contract.domain.as_ref().map(|d| d.as_str().to_string()))
            else {
                continue;
            };
            parsed.push((domain, contract, file));
        }
        let declared: Vec<Declared<'_>> = parsed
            .iter()
            .map(|(domain, contract, file)| Declared {
                domain,
                contract,
                file: file.clone(),
                location: None,
            })
            .collect();
        Ok(Lineage::of(&declared).await)
    }

    pub fn derivations(&self) -> impl Iterator<Item = &Derivation> {
        self.derived.values()
    }

    /// How `product` is derived, if it is.
    pub fn upstream(&self, product: &ProductRef) -> Option<&Derivation> {
        self.derived.get(product)
    }

    /// The derived products that read `product`.
    pub fn downstream(&self, product: &ProductRef) -> Vec<&Derivation> {
        self.derived
            .values()
            .filter(|d| d.inputs.contains_key(product))
            .collect()
    }

    /// Derived products in an order where every input is refreshed before what reads it.
    pub fn in_refresh_order(&self) -> Vec<&Derivation> {
        let mut done: BTreeSet<&ProductRef> = BTreeSet::new();
        let mut out = Vec::new();
        while out.len() < self.derived.len() {
            let before = out.len();
            for d in self.derived.values() {
                if done.contains(&d.product) {
                    continue;
                }
                let ready = d
                    .inputs
                    .keys()
                    .all(|i| !self.derived.contains_key(i) || done.contains(i));
                if ready {
                    done.insert(&d.product);
                    out.push(d);
                }
            }
            if out.len() == before {
                // A cycle: those are refused anyway; list them last.
                out.extend(self.derived.values().filter(|d| !done.contains(&d.product)));
                break;
            }
        }
        out
    }

    /// What a change to `product` reaches: derived columns that come from one of
    /// `columns`, or, with `whole`, every derived product that reads it. A product read
    /// by its newest name is also reached by `new_version` (a new major version of the
    /// same dataset replaces its input at the next refresh).
    pub fn impact(
        &self,
        product: &ProductRef,
        columns: &BTreeSet<String>,
        whole: bool,
        new_version: bool,
    ) -> Vec<Reached> {
        let mut out = Vec::new();
        for d in self.downstream(product) {
            let by_newest = d.inputs.get(product).copied().unwrap_or(false);
            if whole || (new_version && by_newest) {
                out.push(Reached {
                    product: d.product.clone(),
                    owner: d.owner.clone(),
                    column: None,
                });
                continue;
            }
            for (column, sources) in &d.columns {
                for s in sources {
                    if &s.product == product && columns.contains(&s.column) {
                        out.push(Reached {
                            product: d.product.clone(),
                            owner: d.owner.clone(),
                            column: Some((column.clone(), s.clone())),
                        });
                    }
                }
            }
        }
        out
    }

    fn refuse_cycles(&mut self) {
        let edges: HashMap<ProductRef, Vec<ProductRef>> = self
            .derived
            .iter()
            .map(|(p, d)| (p.clone(), d.inputs.keys().cloned().collect()))
            .collect();
        for (product, d) in self.derived.iter_mut() {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<&ProductRef> = edges[product].iter().collect();
            while let Some(p) = todo.pop() {
                if p == product {
                    d.problems.push(format!(
                        "{product} is derived from itself (through its inputs): a refresh \
                         would read its own last result"
                    ));
                    break;
                }
                if seen.insert(p)
                    && let Some(next) = edges.get(p)
                {
                    todo.extend(next);
                }
            }
        }
    }
}

/// A digest of what makes a derived product's data safe to serve under its contract: its
/// SQL and which of its columns are not PII. Data computed under another SQL, or before a
/// column lost its PII tag, may hold what the contract no longer masks.
pub fn data_digest(contract: &Contract) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(contract.source.as_ref().map_or("", |s| s.sql.as_str()));
    let mut clear: Vec<&str> = contract
        .schema
        .iter()
        .filter(|c| !c.is_pii())
        .map(|c| c.name.as_str())
        .collect();
    clear.sort();
    for c in clear {
        h.update([0]);
        h.update(c);
    }
    hex::encode(h.finalize())
}

pub fn product_ref(domain: &str, contract: &Contract) -> ProductRef {
    ProductRef {
        domain: domain.to_string(),
        dataset: contract.dataset.as_str().to_string(),
        version: contract.version.0,
    }
}

/// The result's columns with their planned types.
fn derivation_schema(plan: &LogicalPlan) -> Vec<Field> {
    plan.schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect()
}

/// The derived contract against its SQL: the same columns, castable types, and PII
/// carried from every PII source.
fn check(result: &[Field], contract: &Contract, shapes: &Shapes, d: &mut Derivation) {
    for f in result {
        if contract.column(f.name()).is_none() {
            d.problems.push(format!(
                "source.sql returns column {:?}, which the contract does not declare: \
                 select only the contract's columns",
                f.name()
            ));
        }
    }
    for col in &contract.schema {
        let name = col.name.as_str();
        let Some(f) = result.iter().find(|f| f.name() == name) else {
            d.problems.push(format!(
                "column {name:?} is declared but source.sql does not return it"
            ));
            continue;
        };
        if let Some(want) = col.data_type.arrow_type()
            && !can_cast_types(f.data_type(), &want)
        {
            d.problems.push(format!(
                "column {name:?}: source.sql returns {}, which cannot be cast to {}",
                f.data_type(),
                col.data_type
            ));
        }
        // Governance policies follow tags: a value computed from a tagged column carries
        // the tag on, or the policies on it would stop at the derived product.
        let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for s in d.sources(name) {
            for t in shapes.tags(s) {
                if !col.tags.contains(t) {
                    missing.entry(t.as_str()).or_default().push(s.to_string());
                }
            }
        }
        for (tag, from) in missing {
            d.problems.push(format!(
                "column {name:?} comes from columns tagged {tag} ({}): tag it {tag} too, so \
                 that the mesh's policies on {tag} apply to this product",
                from.join(", ")
            ));
        }
        if col.is_pii() {
            continue;
        }
        let pii: Vec<String> = d
            .sources(name)
            .filter(|s| shapes.is_pii(s))
            .map(|s| s.to_string())
            .collect();
        if !pii.is_empty() {
            d.problems.push(format!(
                "column {name:?} comes from PII ({}): declare it `pii: true` so that it is \
                 masked again for this product's readers",
                pii.join(", ")
            ));
        }
    }
}

/// Every contract's declared columns, as empty tables under their SQL names.
struct Shapes {
    /// domain → table name → shape.
    tables: BTreeMap<String, BTreeMap<String, Arc<Shape>>>,
    pii: BTreeSet<ColumnRef>,
    tags: BTreeMap<ColumnRef, Vec<meshgate_contract::Tag>>,
}

impl Shapes {
    fn of(contracts: &[Declared<'_>]) -> Shapes {
        let mut newest: HashMap<(&str, &str), u32> = HashMap::new();
        for d in contracts {
            let v = newest
                .entry((d.domain, d.contract.dataset.as_str()))
                .or_insert(0);
            *v = (*v).max(d.contract.version.0);
        }
        let mut tables: BTreeMap<String, BTreeMap<String, Arc<Shape>>> = BTreeMap::new();
        let mut pii = BTreeSet::new();
        let mut tags = BTreeMap::new();
        for d in contracts {
            let product = product_ref(d.domain, d.contract);
            let fields: Vec<Field> = d
                .contract
                .schema
                .iter()
                .map(|c| {
                    // A bare decimal takes its precision from the files; any will do here.
                    let ty = c
                        .data_type
                        .scan_type()
                        .unwrap_or(DataType::Decimal128(38, 10));
                    Field::new(c.name.as_str(), ty, true)
                })
                .collect();
            for c in &d.contract.schema {
                let at = ColumnRef {
                    product: product.clone(),
                    column: c.name.as_str().to_string(),
                };
                if !c.tags.is_empty() {
                    tags.insert(at.clone(), c.tags.clone());
                }
                if c.is_pii() {
                    pii.insert(at);
                }
            }
            let schema = Arc::new(Schema::new(fields));
            let domain = tables.entry(d.domain.to_string()).or_default();
            let dataset = d.contract.dataset.as_str();
            let shape = |by_newest| {
                Arc::new(Shape {
                    product: product.clone(),
                    by_newest,
                    schema: Arc::clone(&schema),
                })
            };
            domain.insert(format!("{dataset}_v{}", product.version), shape(false));
            if newest.get(&(d.domain, dataset)) == Some(&product.version) {
                domain.insert(dataset.to_string(), shape(true));
            }
        }
        Shapes { tables, pii, tags }
    }

    fn is_pii(&self, c: &ColumnRef) -> bool {
        self.pii.contains(c)
    }

    fn tags(&self, c: &ColumnRef) -> &[meshgate_contract::Tag] {
        self.tags.get(c).map_or(&[], Vec::as_slice)
    }

    fn context(&self) -> SessionContext {
        let config = SessionConfig::new().with_default_catalog_and_schema(CATALOG, "default");
        let ctx = SessionContext::new_with_config(config);
        let catalog = MemoryCatalogProvider::new();
        for (domain, tables) in &self.tables {
            let schema = MemorySchemaProvider::new();
            for (name, shape) in tables {
                // Names are unique within a domain by construction.
                let _ = schema.register_table(name.clone(), Arc::clone(shape) as _);
            }
            let _ = catalog.register_schema(domain, Arc::new(schema));
        }
        ctx.register_catalog(CATALOG, Arc::new(catalog));
        ctx
    }
}

/// A product's declared columns, for planning only.
#[derive(Debug)]
struct Shape {
    product: ProductRef,
    by_newest: bool,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for Shape {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        datafusion::common::plan_err!("{} is planned for its lineage only", self.product)
    }
}

fn has_outer_references(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|p| {
        for e in p.expressions() {
            let _ = e.apply(|e| {
                found |= matches!(e, Expr::OuterReferenceColumn(..));
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The product a scan reads, and whether by its newest name.
fn shape_of(plan: &LogicalPlan) -> Option<(ProductRef, bool)> {
    let LogicalPlan::TableScan(scan) = plan else {
        return None;
    };
    let provider = source_as_provider(&scan.source).ok()?;
    let shape = provider.downcast_ref::<Shape>()?;
    Some((shape.product.clone(), shape.by_newest))
}

fn collect_inputs(plan: &LogicalPlan, inputs: &mut BTreeMap<ProductRef, bool>) {
    let _ = plan.apply_with_subqueries(|p| {
        if let Some((product, newest)) = shape_of(p) {
            *inputs.entry(product).or_insert(false) |= newest;
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

type Sources = BTreeSet<ColumnRef>;

/// For each output column of `plan`, the product columns its values come from.
pub(crate) fn column_lineage(plan: &LogicalPlan) -> DfResult<Vec<Sources>> {
    let width = plan.schema().fields().len();
    let single = |input: &LogicalPlan| column_lineage(input);
    let out = match plan {
        LogicalPlan::TableScan(scan) => match shape_of(plan) {
            Some((product, _)) => scan
                .projected_schema
                .fields()
                .iter()
                .map(|f| {
                    BTreeSet::from([ColumnRef {
                        product: product.clone(),
                        column: f.name().clone(),
                    }])
                })
                .collect(),
            None => vec![Sources::new(); width],
        },
        LogicalPlan::Projection(p) => {
            let input = single(&p.input)?;
            p.expr
                .iter()
                .map(|e| expr_sources(e, &[(&p.input, &input)]))
                .collect::<DfResult<_>>()?
        }
        LogicalPlan::Aggregate(a) => {
            let input = single(&a.input)?;
            let inputs = [(a.input.as_ref(), &input)];
            let group = grouping_set_to_exprlist(&a.group_expr)?;
            let mut out: Vec<Sources> = group
                .iter()
                .map(|e| expr_sources(e, &inputs))
                .collect::<DfResult<_>>()?;
            // Grouping sets add their grouping id (a number, from no column) between the
            // group columns and the aggregates.
            let id = width.saturating_sub(group.len() + a.aggr_expr.len());
            out.extend(std::iter::repeat_n(Sources::new(), id));
            for e in &a.aggr_expr {
                out.push(expr_sources(e, &inputs)?);
            }
            out
        }
        LogicalPlan::Window(w) => {
            let input = single(&w.input)?;
            let mut out = input.clone();
            for e in &w.window_expr {
                out.push(expr_sources(e, &[(w.input.as_ref(), &input)])?);
            }
            out
        }
        LogicalPlan::Join(j) => {
            let mut left = single(&j.left)?;
            let mut right = single(&j.right)?;
            // A condition can copy a value from one side to the other (`ON g.n =
            // year(c.birth_date)`): every column a conjunct names takes its sources.
            let conjuncts =
                j.on.iter()
                    .map(|(l, r)| l.clone().eq(r.clone()))
                    .chain(
                        j.filter
                            .iter()
                            .flat_map(|f| split_conjunction(f).into_iter().cloned()),
                    )
                    .collect::<Vec<_>>();
            {
                let mut sides = [(j.left.as_ref(), &mut left), (j.right.as_ref(), &mut right)];
                taint(&conjuncts, &mut sides)?;
            }
            match j.join_type {
                JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                    left.into_iter().chain(right).collect()
                }
                JoinType::LeftSemi | JoinType::LeftAnti => left,
                JoinType::RightSemi | JoinType::RightAnti => right,
                _ => everything(width, &[left, right]),
            }
        }
        LogicalPlan::Union(u) => {
            let mut out = vec![Sources::new(); width];
            for input in &u.inputs {
                for (o, s) in out.iter_mut().zip(single(input)?) {
                    o.extend(s);
                }
            }
            out
        }
        LogicalPlan::Distinct(Distinct::On(d)) => {
            let input = single(&d.input)?;
            d.select_expr
                .iter()
                .map(|e| expr_sources(e, &[(d.input.as_ref(), &input)]))
                .collect::<DfResult<_>>()?
        }
        LogicalPlan::Filter(f) => {
            let mut input = single(&f.input)?;
            let conjuncts: Vec<Expr> = split_conjunction(&f.predicate)
                .into_iter()
                .cloned()
                .collect();
            taint(&conjuncts, &mut [(f.input.as_ref(), &mut input)])?;
            input
        }
        LogicalPlan::Values(v) => {
            let mut out = vec![Sources::new(); width];
            for row in &v.values {
                for (o, e) in out.iter_mut().zip(row) {
                    o.extend(expr_sources(e, &[])?);
                }
            }
            out
        }
        LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Repartition(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Subquery(_)
        | LogicalPlan::Distinct(Distinct::All(_)) => single(plan.inputs()[0])?,
        LogicalPlan::EmptyRelation(_) => vec![Sources::new(); width],
        // Anything else: each output column may come from any input column.
        other => {
            let inputs = other
                .inputs()
                .into_iter()
                .map(column_lineage)
                .collect::<DfResult<Vec<_>>>()?;
            everything(width, &inputs)
        }
    };
    if out.len() != width {
        // A shape this walk does not expect: stay on the safe side.
        let inputs = plan
            .inputs()
            .into_iter()
            .map(column_lineage)
            .collect::<DfResult<Vec<_>>>()?;
        return Ok(everything(width, &inputs));
    }
    Ok(out)
}

/// Adds to every column a conjunct names the sources of the whole conjunct.
fn taint(conjuncts: &[Expr], sides: &mut [(&LogicalPlan, &mut Vec<Sources>)]) -> DfResult<()> {
    for conjunct in conjuncts {
        let view: Vec<(&LogicalPlan, &Vec<Sources>)> =
            sides.iter().map(|(p, l)| (*p, &**l)).collect();
        let sources = expr_sources(conjunct, &view)?;
        if sources.is_empty() {
            continue;
        }
        for c in conjunct.column_refs() {
            for (plan, lineage) in sides.iter_mut() {
                if let Ok(i) = plan.schema().index_of_column(c) {
                    lineage[i].extend(sources.iter().cloned());
                    break;
                }
            }
        }
    }
    Ok(())
}

fn everything(width: usize, inputs: &[Vec<Sources>]) -> Vec<Sources> {
    let all: Sources = inputs.iter().flatten().flatten().cloned().collect();
    vec![all; width]
}

/// The columns an expression's value is computed from, including what its scalar and
/// `IN`/`EXISTS` subqueries read.
fn expr_sources(expr: &Expr, inputs: &[(&LogicalPlan, &Vec<Sources>)]) -> DfResult<Sources> {
    let mut out = Sources::new();
    for c in expr.column_refs() {
        let found = inputs
            .iter()
            .find_map(|(plan, lineage)| Some(&lineage[plan.schema().index_of_column(c).ok()?]));
        match found {
            Some(sources) => out.extend(sources.iter().cloned()),
            // Unknown to this walk: refuse rather than lose a source.
            None => return datafusion::common::plan_err!("column {c} has no known source"),
        }
    }
    let mut failed = None;
    expr.apply(|e| {
        let sub = match e {
            Expr::ScalarSubquery(s) => Some(&s.subquery),
            Expr::InSubquery(i) => Some(&i.subquery.subquery),
            Expr::Exists(x) => Some(&x.subquery.subquery),
            Expr::SetComparison(x) => Some(&x.subquery.subquery),
            _ => None,
        };
        if let Some(sub) = sub {
            match column_lineage(sub) {
                Ok(l) => out.extend(l.into_iter().flatten()),
                Err(e) => failed = Some(e),
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests;
