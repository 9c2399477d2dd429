//! A seeded SQL generator over the sample mesh: a small typed AST, rendered to SQL, with
//! the shrinking steps that reduce a finding to its smallest form.
//!
//! Every statement is well typed by construction (columns carry their SQL type), so most
//! of them plan; those that do not are still useful (errors are an output channel too).

use std::fmt::Write as _;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::common::EXPLAIN_FORMS;

/// SQL types the generator tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Int,
    Float,
    Date,
    Ts,
    Bool,
}

/// One product as the generator knows it: its SQL name, its columns and literals drawn
/// from its data (raw values, masked values, hidden rows' values alike).
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub(crate) name: String,
    pub(crate) columns: Vec<(String, Ty)>,
    /// Column → literals (already SQL-quoted) seen in the data.
    pub(crate) literals: Vec<(String, Vec<String>)>,
}

impl Table {
    fn literals_of(&self, column: &str) -> &[String] {
        self.literals
            .iter()
            .find(|(c, _)| c == column)
            .map_or(&[], |(_, l)| l.as_slice())
    }
}

/// Columns that identify a customer across domains: the joins a data mesh is built for.
const JOIN_KEYS: [&str; 3] = ["email", "user_email", "customer_id"];

/// Whether two customer keys hold the same kind of value (e-mails, ids).
fn joinable(a: &str, b: &str) -> bool {
    let kind = |c: &str| c.ends_with("email");
    kind(a) == kind(b)
}

/// A product's name without its version: `web.web_sessions_v1` → `web.web_sessions`.
fn product(table: &str) -> &str {
    match table.rsplit_once("_v") {
        Some((base, v)) if v.chars().all(|c| c.is_ascii_digit()) => base,
        _ => table,
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Expr {
    Col(String, String),
    Lit(String),
    Param(usize),
    Call(&'static str, Vec<Expr>),
    Bin(Box<Expr>, &'static str, Box<Expr>),
    Not(Box<Expr>),
    IsNull(Box<Expr>, bool),
    Like(Box<Expr>, String),
    Cast(Box<Expr>, &'static str),
    Case(Box<Expr>, Box<Expr>, Box<Expr>),
    InList(Box<Expr>, Vec<Expr>),
    InSub(Box<Expr>, Box<Query>),
    Exists(Box<Query>),
    Scalar(Box<Query>),
    /// An aggregate: `count(*)`, `count(DISTINCT x)`, `min(x)`…
    Agg(&'static str, Option<Box<Expr>>, bool),
    /// A window function over partitions of `by`, ordered by `order`.
    Window(&'static str, Option<Box<Expr>>, Vec<Expr>, Vec<Expr>),
}

#[derive(Clone, Debug)]
pub(crate) enum From {
    Table(String, String),
    Join(Box<From>, &'static str, String, String, Expr),
    /// A derived table (or a CTE's name when `cte` is set).
    Sub(Box<Query>, String),
}

#[derive(Clone, Debug)]
pub(crate) struct Select {
    pub(crate) distinct: bool,
    pub(crate) items: Vec<Expr>,
    pub(crate) from: From,
    pub(crate) filter: Option<Expr>,
    pub(crate) group_by: Vec<Expr>,
    pub(crate) having: Option<Expr>,
    /// `ORDER BY` every output column, then `LIMIT n`: deterministic whatever the plan.
    pub(crate) limit: Option<usize>,
}

#[derive(Clone, Debug)]
pub(crate) enum Query {
    Select(Box<Select>),
    SetOp(Box<Query>, &'static str, Box<Query>),
    With(String, Box<Query>, Box<Query>),
}

/// A statement the fuzzer sends: a query, maybe under EXPLAIN, maybe with parameters.
#[derive(Clone, Debug)]
pub(crate) struct Statement {
    pub(crate) explain: Option<&'static str>,
    pub(crate) query: Query,
    /// Values for `$1`, `$2`… (SQL-quoted); the oracle gets them inline.
    pub(crate) params: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

impl Statement {
    /// The SQL the gateway receives (`$n` placeholders stay placeholders).
    pub(crate) fn sql(&self) -> String {
        self.render(false)
    }

    /// The SQL the oracle runs: parameters inlined.
    pub(crate) fn inline_sql(&self) -> String {
        self.render(true)
    }

    fn render(&self, inline: bool) -> String {
        let mut out = String::new();
        if let Some(form) = self.explain {
            out.push_str(form);
            out.push(' ');
        }
        let params = inline.then_some(self.params.as_slice());
        self.query.render(&mut out, params);
        out
    }
}

type Params<'a> = Option<&'a [String]>;

/// `a, b, c`.
fn render_list(out: &mut String, items: &[Expr], p: Params<'_>) {
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        e.render(out, p);
    }
}

impl Query {
    fn render(&self, out: &mut String, p: Params<'_>) {
        match self {
            Query::Select(s) => s.render(out, p),
            Query::SetOp(l, op, r) => {
                out.push('(');
                l.render(out, p);
                let _ = write!(out, ") {op} (");
                r.render(out, p);
                out.push(')');
            }
            Query::With(name, body, main) => {
                let _ = write!(out, "WITH {name} AS (");
                body.render(out, p);
                out.push_str(") ");
                main.render(out, p);
            }
        }
    }

    /// How many columns it returns.
    fn width(&self) -> usize {
        match self {
            Query::Select(s) => s.items.len(),
            Query::SetOp(l, _, _) => l.width(),
            Query::With(_, _, main) => main.width(),
        }
    }
}

impl Select {
    fn render(&self, out: &mut String, p: Params<'_>) {
        out.push_str("SELECT ");
        if self.distinct {
            out.push_str("DISTINCT ");
        }
        for (i, e) in self.items.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            e.render(out, p);
            let _ = write!(out, " AS c{i}");
        }
        out.push_str(" FROM ");
        self.from.render(out, p);
        if let Some(f) = &self.filter {
            out.push_str(" WHERE ");
            f.render(out, p);
        }
        if !self.group_by.is_empty() {
            out.push_str(" GROUP BY ");
            render_list(out, &self.group_by, p);
        }
        if let Some(h) = &self.having {
            out.push_str(" HAVING ");
            h.render(out, p);
        }
        if let Some(n) = self.limit {
            out.push_str(" ORDER BY ");
            for i in 0..self.items.len() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{} NULLS FIRST", i + 1);
            }
            let _ = write!(out, " LIMIT {n}");
        }
    }
}

impl From {
    fn render(&self, out: &mut String, p: Params<'_>) {
        match self {
            From::Table(t, a) => {
                let _ = write!(out, "{t} {a}");
            }
            From::Join(l, kind, t, a, on) => {
                l.render(out, p);
                let _ = write!(out, " {kind} {t} {a} ON ");
                on.render(out, p);
            }
            // A CTE by name: its body is rendered in the WITH.
            From::Sub(_, a) if a.starts_with("cte") => out.push_str(a),
            From::Sub(q, a) => {
                out.push('(');
                q.render(out, p);
                let _ = write!(out, ") {a}");
            }
        }
    }
}

impl Expr {
    fn render(&self, out: &mut String, p: Params<'_>) {
        match self {
            Expr::Col(t, c) => {
                let _ = write!(out, "{t}.{c}");
            }
            Expr::Lit(l) => out.push_str(l),
            Expr::Param(i) => match p {
                Some(values) => out.push_str(&values[*i - 1]),
                None => {
                    let _ = write!(out, "${i}");
                }
            },
            Expr::Call(f, args) => {
                let _ = write!(out, "{f}(");
                render_list(out, args, p);
                out.push(')');
            }
            Expr::Bin(l, op, r) => {
                out.push('(');
                l.render(out, p);
                let _ = write!(out, " {op} ");
                r.render(out, p);
                out.push(')');
            }
            Expr::Not(e) => {
                out.push_str("(NOT ");
                e.render(out, p);
                out.push(')');
            }
            Expr::IsNull(e, negated) => {
                out.push('(');
                e.render(out, p);
                out.push_str(if *negated {
                    " IS NOT NULL)"
                } else {
                    " IS NULL)"
                });
            }
            Expr::Like(e, pattern) => {
                out.push('(');
                e.render(out, p);
                let _ = write!(out, " LIKE {pattern})");
            }
            Expr::Cast(e, ty) => {
                out.push_str("CAST(");
                e.render(out, p);
                let _ = write!(out, " AS {ty})");
            }
            Expr::Case(c, t, e) => {
                out.push_str("CASE WHEN ");
                c.render(out, p);
                out.push_str(" THEN ");
                t.render(out, p);
                out.push_str(" ELSE ");
                e.render(out, p);
                out.push_str(" END");
            }
            Expr::InList(e, list) => {
                out.push('(');
                e.render(out, p);
                out.push_str(" IN (");
                render_list(out, list, p);
                out.push_str("))");
            }
            Expr::InSub(e, q) => {
                out.push('(');
                e.render(out, p);
                out.push_str(" IN (");
                q.render(out, p);
                out.push_str("))");
            }
            Expr::Exists(q) => {
                out.push_str("EXISTS (");
                q.render(out, p);
                out.push(')');
            }
            Expr::Scalar(q) => {
                out.push('(');
                q.render(out, p);
                out.push(')');
            }
            Expr::Agg(f, arg, distinct) => {
                let _ = write!(out, "{f}(");
                match arg {
                    None => out.push('*'),
                    Some(a) => {
                        if *distinct {
                            out.push_str("DISTINCT ");
                        }
                        a.render(out, p);
                    }
                }
                out.push(')');
            }
            Expr::Window(f, arg, by, order) => {
                let _ = write!(out, "{f}(");
                match arg {
                    None if *f == "count" => out.push('*'),
                    None => {}
                    Some(a) => a.render(out, p),
                }
                out.push_str(") OVER (");
                if !by.is_empty() {
                    out.push_str("PARTITION BY ");
                    render_list(out, by, p);
                }
                if !order.is_empty() {
                    out.push_str(" ORDER BY ");
                    render_list(out, order, p);
                }
                out.push(')');
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------

/// A column in scope: how to name it and its type.
#[derive(Clone)]
struct Scoped {
    expr: Expr,
    ty: Ty,
    /// The table it comes from and its name there, for literals.
    table: Option<usize>,
    column: String,
}

pub(crate) struct Generator<'a> {
    pub(crate) tables: &'a [Table],
    rng: StdRng,
    aliases: usize,
    ctes: usize,
    params: Vec<String>,
}

impl<'a> Generator<'a> {
    pub(crate) fn new(tables: &'a [Table], rng: StdRng) -> Generator<'a> {
        Generator {
            tables,
            rng,
            aliases: 0,
            ctes: 0,
            params: vec![],
        }
    }

    pub(crate) fn statement(&mut self) -> Statement {
        self.aliases = 0;
        self.ctes = 0;
        self.params.clear();
        let prepared = self.rng.random_bool(0.1);
        let query = if prepared {
            self.parameterised()
        } else {
            self.query(0)
        };
        let explain = self
            .rng
            .random_bool(0.15)
            .then(|| *EXPLAIN_FORMS.choose(&mut self.rng).unwrap());
        Statement {
            explain,
            query,
            params: std::mem::take(&mut self.params),
        }
    }

    fn pick(&mut self, options: &[&'static str]) -> &'static str {
        options.choose(&mut self.rng).unwrap()
    }

    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("t{}", self.aliases)
    }

    fn table(&mut self) -> usize {
        self.rng.random_range(0..self.tables.len())
    }

    fn scope_of(&self, t: usize, alias: &str) -> Vec<Scoped> {
        self.tables[t]
            .columns
            .iter()
            .map(|(c, ty)| Scoped {
                expr: Expr::Col(alias.to_string(), c.clone()),
                ty: *ty,
                table: Some(t),
                column: c.clone(),
            })
            .collect()
    }

    /// A `SELECT` with `col = $1` (and maybe `$2`) among its predicates.
    fn parameterised(&mut self) -> Query {
        let t = self.table();
        let alias = self.alias();
        let scope = self.scope_of(t, &alias);
        let strings: Vec<&Scoped> = scope.iter().filter(|s| s.ty == Ty::Str).collect();
        let Some(col) = strings.choose(&mut self.rng).map(|s| (*s).clone()) else {
            return self.query(0);
        };
        let value = self.literal(&col);
        self.params.push(value);
        let mut filter = Expr::Bin(
            Box::new(col.expr.clone()),
            "=",
            Box::new(Expr::Param(self.params.len())),
        );
        if self.rng.random_bool(0.3) {
            filter = Expr::Bin(Box::new(filter), "OR", Box::new(self.predicate(&scope, 1)));
        }
        let items = self.items(&scope, 1);
        Query::Select(Box::new(Select {
            distinct: false,
            items,
            from: From::Table(self.tables[t].name.clone(), alias),
            filter: Some(filter),
            group_by: vec![],
            having: None,
            limit: Some(20),
        }))
    }

    fn query(&mut self, depth: usize) -> Query {
        match self.rng.random_range(0..10) {
            0 if depth == 0 => {
                // Set operation over two one-column string selects.
                let op = self.pick(&["UNION", "UNION ALL", "INTERSECT", "EXCEPT"]);
                let l = self.string_select(depth + 1);
                let r = self.string_select(depth + 1);
                Query::SetOp(Box::new(l), op, Box::new(r))
            }
            1 if depth == 0 => {
                self.ctes += 1;
                let name = format!("cte{}", self.ctes);
                let body = self.select(depth + 1, false);
                let main = self.select_over(body.clone(), &name, depth + 1);
                Query::With(name, Box::new(body), Box::new(main))
            }
            2 if depth == 0 => {
                let alias = self.alias();
                let body = self.select(depth + 1, false);
                self.select_over(body, &alias, depth + 1)
            }
            _ => self.select(depth, true),
        }
    }

    /// A select over a derived table or CTE whose columns are `c0`, `c1`…
    fn select_over(&mut self, body: Query, alias: &str, depth: usize) -> Query {
        let scope = self.scope_of_query(&body, alias);
        // A CTE's name renders alone (see From::render): its body lives in the WITH.
        let s = self.select_on(scope, From::Sub(Box::new(body), alias.into()), depth, true);
        Query::Select(Box::new(s))
    }

    fn scope_of_query(&self, q: &Query, alias: &str) -> Vec<Scoped> {
        let types = query_types(q);
        types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| Scoped {
                expr: Expr::Col(alias.into(), format!("c{i}")),
                ty,
                table: None,
                column: format!("c{i}"),
            })
            .collect()
    }

    fn string_select(&mut self, depth: usize) -> Query {
        let t = self.table();
        let alias = self.alias();
        let scope = self.scope_of(t, &alias);
        let item = self.string_expr(&scope, 1);
        let filter = self
            .rng
            .random_bool(0.6)
            .then(|| self.predicate(&scope, depth + 1));
        Query::Select(Box::new(Select {
            distinct: false,
            items: vec![item],
            from: From::Table(self.tables[t].name.clone(), alias),
            filter,
            group_by: vec![],
            having: None,
            limit: None,
        }))
    }

    fn from(&mut self) -> (From, Vec<Scoped>) {
        let t = self.table();
        let alias = self.alias();
        let mut scope = self.scope_of(t, &alias);
        let mut from = From::Table(self.tables[t].name.clone(), alias.clone());
        if self.rng.random_bool(0.3) {
            // Join another product on a customer key, both sides having one.
            let left_keys: Vec<Scoped> = scope
                .iter()
                .filter(|s| JOIN_KEYS.contains(&s.column.as_str()))
                .cloned()
                .collect();
            let u = self.table();
            let right_alias = self.alias();
            let right = self.scope_of(u, &right_alias);
            let left = left_keys.choose(&mut self.rng).cloned();
            let right_keys: Vec<&Scoped> = right
                .iter()
                .filter(|s| {
                    JOIN_KEYS.contains(&s.column.as_str())
                        && left
                            .as_ref()
                            .is_some_and(|l| joinable(&l.column, &s.column))
                })
                .collect();
            // A product joined with itself on e-mails, which the `email` mask makes one
            // value per domain for some roles, squares its rows: a cost, not a case.
            let squares = product(&self.tables[u].name) == product(&self.tables[t].name)
                && left.as_ref().is_some_and(|l| l.column.ends_with("email"));
            if let (Some(l), Some(r), false) = (left, right_keys.choose(&mut self.rng), squares) {
                let kind = self.pick(&["JOIN", "LEFT JOIN", "JOIN"]);
                let on = Expr::Bin(Box::new(l.expr.clone()), "=", Box::new(r.expr.clone()));
                from = From::Join(
                    Box::new(from),
                    kind,
                    self.tables[u].name.clone(),
                    right_alias,
                    on,
                );
                scope.extend(right);
            }
        }
        (from, scope)
    }

    fn select(&mut self, depth: usize, may_aggregate: bool) -> Query {
        let (from, scope) = self.from();
        Query::Select(Box::new(self.select_on(scope, from, depth, may_aggregate)))
    }

    fn select_on(
        &mut self,
        scope: Vec<Scoped>,
        from: From,
        depth: usize,
        may_aggregate: bool,
    ) -> Select {
        let filter = self
            .rng
            .random_bool(0.7)
            .then(|| self.predicate(&scope, depth));
        if may_aggregate && self.rng.random_bool(0.35) {
            let groups: Vec<Expr> = (0..self.rng.random_range(0..3))
                .map(|_| self.expr_any(&scope, 2).0)
                .collect();
            let mut items = groups.clone();
            for _ in 0..self.rng.random_range(1..4) {
                items.push(self.aggregate(&scope));
            }
            let having = self.rng.random_bool(0.2).then(|| {
                Expr::Bin(
                    Box::new(Expr::Agg("count", None, false)),
                    ">",
                    Box::new(Expr::Lit(self.rng.random_range(0..5).to_string())),
                )
            });
            let limit = self.rng.random_bool(0.5).then_some(30);
            return Select {
                distinct: false,
                items,
                from,
                filter,
                group_by: groups,
                having,
                limit,
            };
        }
        let mut items = self.items(&scope, depth);
        if may_aggregate && self.rng.random_bool(0.2) {
            items.push(self.window(&scope));
        }
        // Unordered results are compared as multisets; big ones are cut after ordering.
        let limit = self.rng.random_bool(0.7).then_some(40);
        Select {
            distinct: self.rng.random_bool(0.15),
            items,
            from,
            filter,
            group_by: vec![],
            having: None,
            limit,
        }
    }

    fn items(&mut self, scope: &[Scoped], depth: usize) -> Vec<Expr> {
        (0..self.rng.random_range(1..5))
            .map(|_| self.expr_any(scope, depth + 1).0)
            .collect()
    }

    fn aggregate(&mut self, scope: &[Scoped]) -> Expr {
        let (arg, ty) = self.expr_any(scope, 2);
        match self.rng.random_range(0..6) {
            0 => Expr::Agg("count", None, false),
            1 => Expr::Agg("count", Some(Box::new(arg)), false),
            2 => Expr::Agg("count", Some(Box::new(arg)), true),
            3 => Expr::Agg("min", Some(Box::new(arg)), false),
            4 => Expr::Agg("max", Some(Box::new(arg)), false),
            _ if ty == Ty::Int => Expr::Agg("sum", Some(Box::new(arg)), false),
            _ => Expr::Agg("max", Some(Box::new(arg)), false),
        }
    }

    /// Window functions whose result does not depend on how ties are broken.
    fn window(&mut self, scope: &[Scoped]) -> Expr {
        let by = vec![self.column(scope, None).expr];
        let (arg, _) = self.expr_any(scope, 2);
        match self.rng.random_range(0..4) {
            0 => Expr::Window("count", None, by, vec![]),
            1 => Expr::Window("rank", None, by, vec![arg]),
            2 => Expr::Window("dense_rank", None, by, vec![arg]),
            _ => Expr::Window("max", Some(Box::new(arg)), by, vec![]),
        }
    }

    fn column(&mut self, scope: &[Scoped], ty: Option<Ty>) -> Scoped {
        let matching: Vec<&Scoped> = scope
            .iter()
            .filter(|s| ty.is_none_or(|t| s.ty == t))
            .collect();
        matching
            .choose(&mut self.rng)
            .map(|s| (*s).clone())
            .unwrap_or_else(|| scope.choose(&mut self.rng).unwrap().clone())
    }

    /// An expression of any type, and its type.
    fn expr_any(&mut self, scope: &[Scoped], depth: usize) -> (Expr, Ty) {
        match self.rng.random_range(0..10) {
            0..=3 => {
                let c = self.column(scope, None);
                (c.expr, c.ty)
            }
            4..=6 => (self.string_expr(scope, depth), Ty::Str),
            7 | 8 => (self.int_expr(scope, depth), Ty::Int),
            _ => (self.predicate(scope, depth + 1), Ty::Bool),
        }
    }

    fn string_expr(&mut self, scope: &[Scoped], depth: usize) -> Expr {
        let c = self.column(scope, Some(Ty::Str));
        let x = if c.ty == Ty::Str {
            c.expr.clone()
        } else {
            Expr::Cast(Box::new(c.expr.clone()), "VARCHAR")
        };
        if depth > 3 {
            return x;
        }
        let lit = |s: &str| Expr::Lit(format!("'{s}'"));
        let n = |v: i64| Expr::Lit(v.to_string());
        match self.rng.random_range(0..20) {
            0 => Expr::Call("upper", vec![x]),
            1 => Expr::Call("lower", vec![x]),
            2 => Expr::Call(
                "substr",
                vec![
                    x,
                    n(self.rng.random_range(1..6)),
                    n(self.rng.random_range(1..12)),
                ],
            ),
            3 => Expr::Call("left", vec![x, n(self.rng.random_range(1..8))]),
            4 => Expr::Call("right", vec![x, n(self.rng.random_range(1..8))]),
            5 => {
                let y = self.string_expr(scope, depth + 1);
                Expr::Call("concat", vec![x, lit("|"), y])
            }
            6 => Expr::Call("replace", vec![x, lit("a"), lit("4")]),
            7 => Expr::Call(
                "split_part",
                vec![x, lit("@"), n(self.rng.random_range(1..3))],
            ),
            8 => Expr::Call("regexp_replace", vec![x, lit("[0-9]"), lit("#"), lit("g")]),
            9 => Expr::Call("coalesce", vec![x, lit("none")]),
            10 => Expr::Call("reverse", vec![x]),
            11 => Expr::Call("md5", vec![x]),
            12 => Expr::Case(
                Box::new(self.predicate(scope, depth + 1)),
                Box::new(x),
                Box::new(lit("other")),
            ),
            13 => Expr::Call("lpad", vec![x, n(24), lit("*")]),
            14 => Expr::Call("trim", vec![x]),
            15 => Expr::Call("initcap", vec![x]),
            16 => Expr::Call("translate", vec![x, lit("aeiou"), lit("AEIOU")]),
            17 => {
                let i = self.int_expr(scope, depth + 1);
                Expr::Cast(Box::new(i), "VARCHAR")
            }
            _ => x,
        }
    }

    fn int_expr(&mut self, scope: &[Scoped], depth: usize) -> Expr {
        let n = |v: i64| Expr::Lit(v.to_string());
        match self.rng.random_range(0..9) {
            0 | 1 => {
                let s = self.string_expr(scope, depth + 1);
                Expr::Call("length", vec![s])
            }
            2 => {
                let s = self.string_expr(scope, depth + 1);
                Expr::Call("strpos", vec![s, Expr::Lit("'@'".into())])
            }
            3 => {
                let s = self.string_expr(scope, depth + 1);
                Expr::Call("ascii", vec![s])
            }
            4 => {
                let d = self.column(scope, Some(Ty::Date));
                if d.ty == Ty::Date || d.ty == Ty::Ts {
                    Expr::Cast(
                        Box::new(Expr::Call(
                            "date_part",
                            vec![Expr::Lit("'year'".into()), d.expr],
                        )),
                        "BIGINT",
                    )
                } else {
                    n(self.rng.random_range(0..100))
                }
            }
            5 => {
                let c = self.column(scope, Some(Ty::Int));
                if c.ty == Ty::Int {
                    Expr::Bin(
                        Box::new(c.expr),
                        self.pick(&["+", "-", "*", "%"]),
                        Box::new(n(self.rng.random_range(1..7))),
                    )
                } else {
                    Expr::Call("length", vec![Expr::Cast(Box::new(c.expr), "VARCHAR")])
                }
            }
            _ => {
                let c = self.column(scope, Some(Ty::Int));
                if c.ty == Ty::Int {
                    c.expr
                } else {
                    Expr::Call("length", vec![Expr::Cast(Box::new(c.expr), "VARCHAR")])
                }
            }
        }
    }

    /// A SQL literal for `col`: from the product's data when known.
    fn literal(&mut self, col: &Scoped) -> String {
        let known = col
            .table
            .map(|t| self.tables[t].literals_of(&col.column))
            .unwrap_or(&[]);
        if let Some(v) = known.choose(&mut self.rng) {
            return v.clone();
        }
        match col.ty {
            Ty::Str => format!(
                "'{}'",
                ["a", "EU", "US", "x@example.com"]
                    .choose(&mut self.rng)
                    .unwrap()
            ),
            Ty::Int => self.rng.random_range(0..1000).to_string(),
            Ty::Float => format!("{}.5", self.rng.random_range(0..1000)),
            Ty::Date => "DATE '1990-06-15'".into(),
            Ty::Ts => "TIMESTAMP '2024-01-01 00:00:00'".into(),
            Ty::Bool => "true".into(),
        }
    }

    fn predicate(&mut self, scope: &[Scoped], depth: usize) -> Expr {
        if depth > 3 {
            let c = self.column(scope, None);
            return Expr::IsNull(Box::new(c.expr), self.rng.random_bool(0.5));
        }
        let c = self.column(scope, None);
        match self.rng.random_range(0..16) {
            0..=3 => {
                let op = self.pick(&["=", "<>", "<", ">=", "="]);
                let v = self.literal(&c);
                Expr::Bin(Box::new(c.expr), op, Box::new(Expr::Lit(v)))
            }
            4 if c.ty == Ty::Str => {
                // A prefix of a value in the data: the guessing game masks must defeat.
                let v = self.literal(&c);
                let inner = v.trim_matches('\'');
                let cut = inner
                    .char_indices()
                    .nth(self.rng.random_range(1..6))
                    .map_or(inner.len(), |(i, _)| i);
                Expr::Like(
                    Box::new(c.expr),
                    format!("'{}%'", &inner[..cut].replace('%', "")),
                )
            }
            5 if c.ty == Ty::Str => {
                let v = self.literal(&c);
                let inner = v.trim_matches('\'');
                let cut = inner.char_indices().nth(3).map_or(inner.len(), |(i, _)| i);
                let f = self.pick(&["starts_with", "regexp_like"]);
                let pattern = if f == "regexp_like" {
                    format!("'^{}'", regex_escape(&inner[..cut]))
                } else {
                    format!("'{}'", &inner[..cut])
                };
                Expr::Call(f, vec![c.expr, Expr::Lit(pattern)])
            }
            6 => {
                let list = (0..self.rng.random_range(1..4))
                    .map(|_| Expr::Lit(self.literal(&c)))
                    .collect();
                Expr::InList(Box::new(c.expr), list)
            }
            7 => Expr::IsNull(Box::new(c.expr), self.rng.random_bool(0.5)),
            8 => {
                let l = self.predicate(scope, depth + 1);
                let r = self.predicate(scope, depth + 1);
                Expr::Bin(Box::new(l), "AND", Box::new(r))
            }
            9 => {
                let l = self.predicate(scope, depth + 1);
                let r = self.predicate(scope, depth + 1);
                Expr::Bin(Box::new(l), "OR", Box::new(r))
            }
            10 => Expr::Not(Box::new(self.predicate(scope, depth + 1))),
            11 if depth < 2 => {
                // IN (subquery) over a customer key of another product.
                let (e, q) = self.key_subquery(scope, depth);
                Expr::InSub(Box::new(e), Box::new(q))
            }
            12 if depth < 2 => {
                // Correlated EXISTS on a customer key.
                let (outer, q) = self.key_subquery(scope, depth);
                let Query::Select(mut s) = q else {
                    unreachable!()
                };
                let inner = s.items.pop().unwrap();
                let corr = Expr::Bin(Box::new(inner), "=", Box::new(outer));
                s.items = vec![Expr::Lit("1".into())];
                s.filter = Some(match s.filter.take() {
                    Some(f) => Expr::Bin(Box::new(f), "AND", Box::new(corr)),
                    None => corr,
                });
                Expr::Exists(Box::new(Query::Select(s)))
            }
            13 if depth < 2 => {
                // Compare with a scalar subquery's aggregate.
                let t = self.table();
                let alias = self.alias();
                let inner = self.scope_of(t, &alias);
                let target = self.column(&inner, Some(c.ty));
                // A product without a column of that type: compare as text, not through a
                // cast that fails on whichever rows an engine happens to evaluate first.
                let (outer, target) = if target.ty == c.ty {
                    (c.expr, target.expr)
                } else {
                    (
                        Expr::Cast(Box::new(c.expr), "VARCHAR"),
                        Expr::Cast(Box::new(target.expr), "VARCHAR"),
                    )
                };
                let filter = self
                    .rng
                    .random_bool(0.5)
                    .then(|| self.predicate(&inner, depth + 2));
                let q = Query::Select(Box::new(Select {
                    distinct: false,
                    items: vec![Expr::Agg(
                        self.pick(&["min", "max"]),
                        Some(Box::new(target)),
                        false,
                    )],
                    from: From::Table(self.tables[t].name.clone(), alias),
                    filter,
                    group_by: vec![],
                    having: None,
                    limit: None,
                }));
                Expr::Bin(
                    Box::new(outer),
                    self.pick(&["=", "<", ">="]),
                    Box::new(Expr::Scalar(Box::new(q))),
                )
            }
            14 => {
                let i = self.int_expr(scope, depth + 1);
                Expr::Bin(
                    Box::new(i),
                    self.pick(&[">", "=", "<"]),
                    Box::new(Expr::Lit(self.rng.random_range(0..40).to_string())),
                )
            }
            _ => {
                let s = self.string_expr(scope, depth + 1);
                let v = self.literal(&c);
                let v = if c.ty == Ty::Str {
                    v
                } else {
                    format!("CAST({v} AS VARCHAR)")
                };
                Expr::Bin(Box::new(s), "=", Box::new(Expr::Lit(v)))
            }
        }
    }

    /// A customer key in scope (or any string column) and a one-column query of another
    /// product's customer key.
    fn key_subquery(&mut self, scope: &[Scoped], depth: usize) -> (Expr, Query) {
        let keys: Vec<&Scoped> = scope
            .iter()
            .filter(|s| JOIN_KEYS.contains(&s.column.as_str()))
            .collect();
        let outer = keys
            .choose(&mut self.rng)
            .map(|s| (*s).clone())
            .unwrap_or_else(|| self.column(scope, Some(Ty::Str)));
        let candidates: Vec<usize> = (0..self.tables.len())
            .filter(|t| {
                self.tables[*t]
                    .columns
                    .iter()
                    .any(|(c, _)| JOIN_KEYS.contains(&c.as_str()))
            })
            .collect();
        let t = *candidates.choose(&mut self.rng).unwrap_or(&0);
        let alias = self.alias();
        let inner = self.scope_of(t, &alias);
        let key = inner
            .iter()
            .filter(|s| {
                JOIN_KEYS.contains(&s.column.as_str()) && joinable(&outer.column, &s.column)
            })
            .collect::<Vec<_>>()
            .choose(&mut self.rng)
            .map(|s| (*s).clone())
            .unwrap_or_else(|| inner[0].clone());
        let filter = self
            .rng
            .random_bool(0.6)
            .then(|| self.predicate(&inner, depth + 2));
        let q = Query::Select(Box::new(Select {
            distinct: false,
            items: vec![key.expr],
            from: From::Table(self.tables[t].name.clone(), alias),
            filter,
            group_by: vec![],
            having: None,
            limit: None,
        }));
        (outer.expr, q)
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ' ' || c == '@' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// The output types of a query, as far as the generator tracks them.
fn query_types(q: &Query) -> Vec<Ty> {
    match q {
        Query::Select(s) => s.items.iter().map(expr_type).collect(),
        Query::SetOp(l, _, _) => query_types(l),
        Query::With(_, _, main) => query_types(main),
    }
}

fn expr_type(e: &Expr) -> Ty {
    match e {
        Expr::Col(..) | Expr::Lit(_) | Expr::Param(_) | Expr::Scalar(_) => Ty::Str,
        Expr::Call(f, _) if ["length", "strpos", "ascii"].contains(f) => Ty::Int,
        Expr::Call(f, _) if ["starts_with", "regexp_like"].contains(f) => Ty::Bool,
        Expr::Call(..) | Expr::Case(..) => Ty::Str,
        Expr::Cast(_, "VARCHAR") => Ty::Str,
        Expr::Cast(..) => Ty::Int,
        Expr::Bin(_, op, _) if ["+", "-", "*", "%"].contains(op) => Ty::Int,
        Expr::Bin(..)
        | Expr::Not(_)
        | Expr::IsNull(..)
        | Expr::Like(..)
        | Expr::InList(..)
        | Expr::InSub(..)
        | Expr::Exists(_) => Ty::Bool,
        Expr::Agg("count", ..) | Expr::Agg("sum", ..) => Ty::Int,
        Expr::Agg(..) => Ty::Str,
        Expr::Window("max", ..) => Ty::Str,
        Expr::Window(..) => Ty::Int,
    }
}

// ---------------------------------------------------------------------------------------
// Shrinking
// ---------------------------------------------------------------------------------------

impl Statement {
    /// Smaller statements, each one step simpler; the caller keeps one that still fails.
    pub(crate) fn shrinks(&self) -> Vec<Statement> {
        let mut out = Vec::new();
        if self.explain.is_some_and(|f| f != "EXPLAIN") {
            out.push(Statement {
                explain: Some("EXPLAIN"),
                ..self.clone()
            });
        }
        for q in self.query.shrinks() {
            out.push(Statement {
                query: q,
                ..self.clone()
            });
        }
        out
    }
}

impl Query {
    fn shrinks(&self) -> Vec<Query> {
        match self {
            Query::Select(s) => s
                .shrinks()
                .into_iter()
                .map(|s| Query::Select(Box::new(s)))
                .collect(),
            Query::SetOp(l, op, r) => {
                let mut out = vec![(**l).clone(), (**r).clone()];
                out.extend(
                    l.shrinks()
                        .into_iter()
                        .map(|l| Query::SetOp(Box::new(l), op, r.clone())),
                );
                out.extend(
                    r.shrinks()
                        .into_iter()
                        .map(|r| Query::SetOp(l.clone(), op, Box::new(r))),
                );
                out
            }
            Query::With(name, body, main) => {
                let mut out: Vec<Query> = body
                    .shrinks()
                    .into_iter()
                    .filter(|b| b.width() == body.width())
                    .map(|b| Query::With(name.clone(), Box::new(b), main.clone()))
                    .collect();
                out.extend(
                    main.shrinks()
                        .into_iter()
                        .map(|m| Query::With(name.clone(), body.clone(), Box::new(m))),
                );
                out
            }
        }
    }
}

impl Select {
    fn shrinks(&self) -> Vec<Select> {
        let mut out = Vec::new();
        let with = |f: &dyn Fn(&mut Select)| {
            let mut s = self.clone();
            f(&mut s);
            s
        };
        if self.limit.is_some() {
            out.push(with(&|s| s.limit = None));
        }
        if self.distinct {
            out.push(with(&|s| s.distinct = false));
        }
        if self.having.is_some() {
            out.push(with(&|s| s.having = None));
        }
        if let Some(f) = &self.filter {
            out.push(with(&|s| s.filter = None));
            for smaller in f.shrinks() {
                let mut s = self.clone();
                s.filter = Some(smaller);
                out.push(s);
            }
        }
        if let From::Join(left, ..) = &self.from {
            out.push(with(&|s| s.from = (**left).clone()));
        }
        if let From::Sub(q, a) = &self.from
            && !a.starts_with("cte")
        {
            for smaller in q.shrinks().into_iter().filter(|b| b.width() == q.width()) {
                let mut s = self.clone();
                s.from = From::Sub(Box::new(smaller), a.clone());
                out.push(s);
            }
        }
        if self.items.len() > 1 {
            for i in 0..self.items.len() {
                let mut s = self.clone();
                let removed = s.items.remove(i);
                s.group_by
                    .retain(|g| format!("{g:?}") != format!("{removed:?}"));
                out.push(s);
            }
        }
        for i in 0..self.items.len() {
            for smaller in self.items[i].shrinks() {
                let mut s = self.clone();
                s.items[i] = smaller;
                out.push(s);
            }
        }
        out
    }
}

impl Expr {
    fn shrinks(&self) -> Vec<Expr> {
        match self {
            Expr::Call(f, args) => {
                let mut out: Vec<Expr> = args
                    .iter()
                    .filter(|a| !matches!(a, Expr::Lit(_)))
                    .cloned()
                    .collect();
                for (i, a) in args.iter().enumerate() {
                    for smaller in a.shrinks() {
                        let mut args = args.clone();
                        args[i] = smaller;
                        out.push(Expr::Call(f, args));
                    }
                }
                out
            }
            Expr::Bin(l, op, r) => {
                let mut out = Vec::new();
                if ["AND", "OR"].contains(op) {
                    out.push((**l).clone());
                    out.push((**r).clone());
                }
                out.extend(
                    l.shrinks()
                        .into_iter()
                        .map(|l| Expr::Bin(Box::new(l), op, r.clone())),
                );
                out.extend(
                    r.shrinks()
                        .into_iter()
                        .map(|r| Expr::Bin(l.clone(), op, Box::new(r))),
                );
                out
            }
            Expr::Not(e) => vec![(**e).clone()],
            Expr::Cast(e, _) => vec![(**e).clone()],
            Expr::Case(c, t, e) => vec![(**t).clone(), (**e).clone(), (**c).clone()],
            Expr::InList(e, list) if list.len() > 1 => {
                vec![Expr::InList(e.clone(), vec![list[0].clone()])]
            }
            Expr::InSub(e, q) => q
                .shrinks()
                .into_iter()
                .map(|q| Expr::InSub(e.clone(), Box::new(q)))
                .collect(),
            Expr::Exists(q) => q
                .shrinks()
                .into_iter()
                .map(|q| Expr::Exists(Box::new(q)))
                .collect(),
            Expr::Agg(f, Some(a), d) => {
                let mut out = vec![Expr::Agg("count", None, false)];
                out.extend(
                    a.shrinks()
                        .into_iter()
                        .map(|a| Expr::Agg(f, Some(Box::new(a)), *d)),
                );
                out
            }
            _ => vec![],
        }
    }
}
