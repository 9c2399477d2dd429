//! Mesh-wide policies (`policies:` in governance.yaml): a floor under every product they
//! match, whatever its contract grants, through Flight SQL and Postgres alike; a contract
//! that would loosen one is refused by lint and by the server; the catalog says where each
//! mask comes from; `meshgate diff` on a governance change names what it loosens.
//!
//! The sample mesh's own policies are also checked per role in tests/slt/ and by the
//! policy fuzzer, whose oracle reads governance.yaml on its own.

use std::path::Path;
use std::process::Output;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::flight::{TestServer, fetch};
use crate::common::{TestMesh, copy_tree, repo};

/// Policies added to the sample's for these tests: a row filter by domain and a mask by tag
/// on a role the contracts let read in the clear. (A policy mask stricter than a
/// contract's own for its masked readers would make the contract refused: see below.)
const MORE_POLICIES: &str = r#"
  - name: web-de-only-for-support
    match: {domains: [web]}
    roles: [eu_support]
    row_filter: "country = 'DE'"
  - name: birthdays-hidden
    match: {tags: [pii.birth]}
    roles: [eu_support]
    mask: "null"
"#;

async fn governed_mesh() -> TestMesh {
    TestMesh::load_with(|config| {
        let file = config.contracts.join("governance.yaml");
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str(MORE_POLICIES);
        std::fs::write(&file, text).unwrap();
    })
    .await
}

async fn query(s: &TestServer, user: &str, sql: &str) -> Vec<String> {
    let mut c = s.client(user).await;
    let info = c.execute(sql.into(), None).await.unwrap_or_else(|e| {
        let audit = std::fs::read_to_string(&s.audit).unwrap_or_default();
        panic!("{sql}: {e}\n{audit}")
    });
    lines(&fetch(&mut c, info).await.1)
}

fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|a| ArrayFormatter::try_new(a.as_ref(), &options).unwrap())
            .collect();
        for row in 0..b.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            out.push(cells.join(" "));
        }
    }
    out
}

async fn pg_query(s: &TestServer, user: &str, sql: &str) -> Vec<String> {
    let client = crate::common::pg::connect(s.server.pg_addr.unwrap(), user)
        .await
        .unwrap();
    crate::common::pg::simple_rows(&client, sql)
        .await
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| v.unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[tokio::test]
async fn policies_hold_whatever_the_query_and_the_protocol() {
    let s = TestServer::with_mesh(governed_mesh().await, |_| {}).await;
    // The analyst sees every country; support, by the contract, the EU six; by the
    // policy of its domain, Germany only (both filters hold).
    let per_country =
        "SELECT country, count(*) FROM web.web_sessions GROUP BY country ORDER BY country";
    let all = query(&s, "analyst", per_country).await;
    let de: Vec<String> = all
        .iter()
        .filter(|l| l.starts_with("DE "))
        .cloned()
        .collect();
    assert!(all.len() > 2 && de.len() == 1, "{all:?}");
    for sql in [
        per_country.to_string(),
        // A predicate that would reach other rows, a subquery, a join with itself.
        "SELECT country, count(*) FROM web.web_sessions WHERE country IN ('FR', 'DE') OR true GROUP BY country".into(),
        "SELECT 'DE', count(*) FROM web.web_sessions WHERE session_id IN (SELECT session_id FROM web.web_sessions WHERE country <> 'DE') OR country = 'DE'".into(),
        "SELECT a.country, count(*) FROM web.web_sessions a JOIN web.web_sessions b ON a.session_id = b.session_id GROUP BY a.country".into(),
    ] {
        assert_eq!(query(&s, "support", &sql).await, de, "{sql}");
        assert_eq!(pg_query(&s, "support", &sql).await, de, "{sql} over Postgres");
    }
    // Other domains are not filtered by it: the EU profiles, as the contract says.
    let profiles = "SELECT count(*) FROM customers.customer_profiles";
    assert_eq!(query(&s, "support", profiles).await, ["6659"]);

    // Support's contract grant shows birth dates in the clear; the policy hides them
    // entirely, and no predicate or aggregate sees through it.
    for sql in [
        "SELECT count(birth_date) FROM customers.customer_profiles",
        "SELECT count(*) FROM customers.customer_profiles WHERE birth_date IS NOT NULL",
        "SELECT count(DISTINCT birth_date) FROM customers.customer_profiles_v1",
        "SELECT count(*) FROM customers.customer_profiles WHERE birth_date < DATE '2100-01-01'",
    ] {
        assert_eq!(query(&s, "support", sql).await, ["0"], "{sql}");
        assert_eq!(
            pg_query(&s, "support", sql).await,
            ["0"],
            "{sql} over Postgres"
        );
    }
    // Marketing keeps what its contract gives it: the year (every date a 1 January).
    assert_eq!(
        query(
            &s,
            "marketer",
            "SELECT count(birth_date) > 0, count(*) FILTER (WHERE date_part('month', birth_date) \
             <> 1 OR date_part('day', birth_date) <> 1) FROM customers.customer_profiles"
        )
        .await,
        ["true 0"]
    );
    // The analyst is not bound by either policy.
    let dates = query(
        &s,
        "analyst",
        "SELECT count(birth_date) > 0 FROM customers.customer_profiles",
    )
    .await;
    assert_eq!(dates, ["true"]);

    // EXPLAIN shows the policy's filter and mask.
    let plan = query(
        &s,
        "support",
        "EXPLAIN VERBOSE SELECT * FROM web.web_sessions",
    )
    .await
    .join("\n");
    assert!(plan.contains("country = Utf8View(\"DE\")"), "{plan}");
    let plan = query(
        &s,
        "support",
        "EXPLAIN SELECT birth_date FROM customers.customer_profiles",
    )
    .await
    .join("\n");
    assert!(plan.contains("birth_date:null"), "{plan}");
}

#[tokio::test]
async fn several_roles_show_no_cell_beyond_the_role_that_sees_its_row() {
    use meshgate_policy::{MeshSession, Policy, Principal};
    let mesh = governed_mesh().await;
    let run = |roles: &'static [&'static str], sql: &'static str| {
        let session = MeshSession::new(
            &mesh.mesh,
            Policy::new(
                Principal::new("x", roles.iter().copied()),
                crate::common::key(),
            ),
        );
        async move {
            let batches = session.sql(sql).await.unwrap().collect().await.unwrap();
            lines(&batches)
        }
    };
    let emails = "SELECT count(*), count(DISTINCT email), max(length(email)) FROM customers.customer_profiles";
    // Support alone: EU rows, e-mails hashed by governance (64 hex digits).
    let support = run(&["eu_support"], emails).await;
    assert!(support[0].ends_with(" 64"), "{support:?}");
    // With the analysts' role, which reads every row in the clear: the analyst's view.
    let both = run(&["eu_support", "data_analyst"], emails).await;
    assert_eq!(both, run(&["data_analyst"], emails).await);
    assert!(!both[0].ends_with(" 64"), "{both:?}");
    // And the birth dates governance nulls for support alone are the analyst's too.
    let dates = "SELECT count(birth_date) FROM customers.customer_profiles";
    assert_eq!(run(&["eu_support"], dates).await, ["0"]);
    assert_ne!(run(&["eu_support", "data_analyst"], dates).await, ["0"]);
}

#[tokio::test]
async fn the_catalog_shows_each_roles_view_and_where_it_comes_from() {
    let s = TestServer::with_mesh(governed_mesh().await, |_| {}).await;
    let d = s
        .describe_product("support", "customers.customer_profiles")
        .await;
    let col = |name: &str| d.columns.iter().find(|c| c.name == name).unwrap().clone();
    let email = col("email");
    assert_eq!(email.tags, ["pii.email"]);
    // The caller (support, read by contract) reads it hashed, because of governance.
    assert_eq!(email.caller_sees, "hash");
    let policy = |c: &meshgate_proto::catalog::Column, role: &str| {
        let p = c.policy.iter().find(|p| p.role == role).unwrap();
        (p.mask.clone(), p.sources.clone())
    };
    assert_eq!(
        policy(&email, "eu_support"),
        (
            "hash".into(),
            vec!["governance policy email-hashed".to_string()]
        )
    );
    assert_eq!(
        policy(&email, "marketing"),
        (
            "hash".into(),
            vec![
                "contract".to_string(),
                "governance policy email-hashed".into()
            ]
        )
    );
    assert_eq!(policy(&email, "data_analyst"), ("clear".into(), vec![]));
    assert_eq!(
        policy(&col("birth_date"), "eu_support"),
        (
            "null".into(),
            vec!["governance policy birthdays-hidden".to_string()]
        )
    );
    assert_eq!(
        policy(&col("birth_date"), "marketing"),
        ("year".into(), vec!["contract".to_string()])
    );
    // A reader in the clear with a governance mask is not shown as reading in the clear.
    let summary = d.summary.unwrap();
    assert_eq!(
        summary.access,
        meshgate_proto::catalog::Access::ReadMasked as i32
    );
    let web = s.describe_product("support", "web.web_sessions").await;
    let grant = web.grants.iter().find(|g| g.role == "eu_support").unwrap();
    assert_eq!(
        grant.policy_row_filters,
        ["country = 'DE' (governance policy web-de-only-for-support)"]
    );
    assert!(
        !grant.row_filter.is_empty(),
        "the contract's own filter stays listed"
    );
}

async fn meshgate(dir: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Edits `file` under `dir` by replacing `from` (which must be there) with `to`.
fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in {file}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test]
async fn a_contract_that_loosens_a_policy_is_refused_by_lint_and_by_the_server() {
    // Three ways to ask for less than the floor, one per product.
    let loosen = |contracts: &Path| {
        // A grant to a role the policy denies.
        let checkout = contracts.join("checkout/checkout_orders_summary.yaml");
        let mut text = std::fs::read_to_string(&checkout).unwrap();
        text.push_str("  - role: eu_support\n    permission: read_masked\n");
        std::fs::write(&checkout, text).unwrap();
        // A mask that shows what the policy hides (the e-mail's domain).
        edit(
            contracts,
            "customers/customer_profiles_v1.yaml",
            "    mask: hash\n    tags: [pii.email]",
            "    mask: email\n    tags: [pii.email]",
        );
        // A tagged column declared not PII.
        edit(
            contracts,
            "customers/customer_profiles_v2.yaml",
            "    pii: true\n    mask: \"null\"\n    tags: [pii.location]",
            "    pii: false\n    tags: [pii.location]",
        );
    };
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("contracts"), &dir.path().join("contracts"));
    loosen(&dir.path().join("contracts"));
    let lint = meshgate(dir.path(), &["lint"]).await;
    let out = text(&lint);
    assert_eq!(lint.status.code(), Some(1), "{out}");
    for expected in [
        "checkout_orders_summary.yaml:37:5: access_policy[2].role: role eu_support may not read this product: governance policy no-revenue-for-support denies it (governance: policies)",
        "customer_profiles_v1.yaml:22:5: schema[1].mask: column email is masked email, which shows what policy email-hashed hides (hash); use hash, redact or null (governance: policies)",
        "schema[6].pii: column street_address is tagged for policy location-hidden, which masks it (null): it cannot be pii: false (governance: policies)",
    ] {
        assert!(out.contains(expected), "{expected}\n--- in ---\n{out}");
    }

    // The server: the three are quarantined with the same reasons (and the product derived
    // from checkout with them), the rest is served.
    let mesh = TestMesh::load_with(|config| loosen(&config.contracts)).await;
    let quarantined: Vec<String> = mesh
        .mesh
        .quarantined()
        .iter()
        .filter(|q| q.domain != "lab")
        .map(|q| format!("{}.{} {}", q.domain, q.dataset, q.reasons.join("; ")))
        .collect();
    let mut names: Vec<&str> = quarantined
        .iter()
        .map(|q| q.split(' ').next().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "checkout.checkout_orders_summary",
            "customers.customer_profiles",
            "customers.customer_profiles",
            "marketing.sales_by_region",
        ],
        "{quarantined:#?}"
    );
    for (product, policy) in [
        ("checkout.checkout_orders_summary", "no-revenue-for-support"),
        ("customers.customer_profiles", "email-hashed"),
        ("customers.customer_profiles", "location-hidden"),
    ] {
        assert!(
            quarantined
                .iter()
                .any(|q| q.starts_with(product) && q.contains(policy)),
            "{product} {policy}: {quarantined:#?}"
        );
    }
    let served: Vec<String> = mesh
        .mesh
        .products()
        .iter()
        .map(|p| p.display_name())
        .collect();
    assert!(
        served.iter().any(|p| p.starts_with("web.web_sessions")),
        "{served:?}"
    );
}

#[tokio::test]
async fn diff_of_a_governance_change_lists_each_product_and_fails_on_loosening() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("contracts"), &dir.path().join("contracts"));
    let old = dir.path().join("governance-before.yaml");
    std::fs::copy(dir.path().join("contracts/governance.yaml"), &old).unwrap();
    // Support is let off the e-mail policy (looser), addresses get hashed instead of null
    // for everyone but analysts (looser too), and a new filter binds marketing (tighter).
    edit(
        dir.path(),
        "contracts/governance.yaml",
        "    mask: hash\n    except_roles: [data_analyst]",
        "    mask: hash\n    except_roles: [data_analyst, eu_support]",
    );
    edit(
        dir.path(),
        "contracts/governance.yaml",
        "    mask: \"null\"\n    except_roles: [data_analyst]",
        "    mask: redact\n    except_roles: [data_analyst]",
    );
    let mut rules = std::fs::read_to_string(dir.path().join("contracts/governance.yaml")).unwrap();
    rules.push_str(
        "  - name: marketing-eu\n    match: {domains: [web]}\n    roles: [marketing]\n    row_filter: \"country = 'DE'\"\n",
    );
    std::fs::write(dir.path().join("contracts/governance.yaml"), rules).unwrap();

    let args = [
        "diff",
        "governance-before.yaml",
        "contracts/governance.yaml",
        "--fail-on",
        "security",
    ];
    let out = meshgate(dir.path(), &args).await;
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    for expected in [
        "customers.customer_profiles v1\n",
        "  security     schema.email.eu_support: eu_support now reads it in the clear (was hash by governance policy email-hashed)",
        "  breaking     access_policy.marketing.row_filter: marketing is now filtered by country = 'DE' (governance policy marketing-eu)",
        "web.web_sessions v1\n",
        "error: changes that --fail-on refuses",
    ] {
        assert!(
            report.contains(expected),
            "{expected}\n--- in ---\n{report}"
        );
    }
    // The contract redacts the address for marketing, so only the role the policy alone
    // masked (eu_support reads it in the clear by contract) shows more now.
    assert!(
        report.contains("schema.street_address.eu_support: eu_support reads it redact instead of null, which shows more"),
        "{report}"
    );
    assert!(!report.contains("street_address.marketing"), "{report}");
    // Denying a role a contract grants is no security change, but it refuses the contract,
    // which fails the diff on its own.
    let tight = dir.path().join("tight");
    std::fs::create_dir(&tight).unwrap();
    let diff_with = |roles: &'static str| {
        let tight = tight.clone();
        let old = old.clone();
        let dir = dir.path().to_path_buf();
        async move {
            std::fs::copy(&old, tight.join("governance.yaml")).unwrap();
            edit(
                &tight,
                "governance.yaml",
                "roles: [eu_support, regional_support]",
                roles,
            );
            meshgate(
                &dir,
                &[
                    "diff",
                    "governance-before.yaml",
                    "tight/governance.yaml",
                    "--fail-on",
                    "security",
                ],
            )
            .await
        }
    };
    let out = diff_with("roles: [eu_support, regional_support, marketing]").await;
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("breaking     access_policy.marketing: role marketing is denied by policy no-revenue-for-support"),
        "{report}"
    );
    assert!(
        report.contains("refused      access_policy[1].role"),
        "{report}"
    );
    assert!(
        report.contains("error: the new rules refuse some contracts"),
        "{report}"
    );
    // A tightening every contract already meets passes.
    let out = diff_with("roles: [eu_support, regional_support, newcomers]").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("no change to any product's effective policy"),
        "{}",
        text(&out)
    );
}
