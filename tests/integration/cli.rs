//! `meshgate sql` as an analyst sees it: the real binary against a gateway on port 0, its
//! output pinned by snapshots (tables, CSV, JSON lines, one-line errors).

use std::process::Output;

use super::flight::TestServer;

/// A client verb (`sql`, `catalog`) of the real binary against the test server.
async fn client_verb(
    s: &TestServer,
    verb: &str,
    user: &str,
    password: &str,
    args: &[&str],
) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .arg(verb)
        .args(["--url", &format!("grpc://{}", s.server.flight_addr)])
        .args(["--user", user])
        .args(args)
        .env("MESHGATE_PASSWORD", password)
        .env_remove("MESHGATE_ROLE")
        .output()
        .await
        .unwrap()
}

async fn sql(s: &TestServer, user: &str, password: &str, args: &[&str]) -> Output {
    client_verb(s, "sql", user, password, args).await
}

fn text(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const PROFILES: &str = "SELECT customer_id, email, phone, region \
    FROM customers.customer_profiles ORDER BY customer_id LIMIT 3";

#[tokio::test]
async fn sql_prints_aligned_tables_masked_for_the_marketer_and_raw_for_the_analyst() {
    let s = TestServer::start().await;
    insta::assert_snapshot!(
        "sql_table_marketer",
        text(&sql(&s, "marketer", "marketer", &[PROFILES]).await)
    );
    insta::assert_snapshot!(
        "sql_table_analyst",
        text(&sql(&s, "analyst", "analyst", &[PROFILES]).await)
    );
    // An empty result still shows its header.
    insta::assert_snapshot!(
        "sql_table_empty",
        text(
            &sql(
                &s,
                "analyst",
                "analyst",
                &["SELECT order_id FROM checkout.checkout_orders_summary WHERE false"]
            )
            .await
        )
    );
}

#[tokio::test]
async fn sql_writes_csv_and_json_lines() {
    let s = TestServer::start().await;
    let q = "SELECT order_id, user_email, total_amount FROM checkout.checkout_orders_summary \
             ORDER BY order_id LIMIT 2";
    insta::assert_snapshot!(
        "sql_csv_marketer",
        text(&sql(&s, "marketer", "marketer", &["--format", "csv", q]).await)
    );
    insta::assert_snapshot!(
        "sql_json_analyst",
        text(&sql(&s, "analyst", "analyst", &["--format", "json", q]).await)
    );
}

#[tokio::test]
async fn sql_errors_are_one_readable_line_with_a_failing_exit() {
    let s = TestServer::start().await;
    let wrong_password = sql(&s, "analyst", "nope", &["SELECT 1"]).await;
    let bad_sql = sql(&s, "analyst", "analyst", &["SELEC 1"]).await;
    let denied = sql(&s, "guest", "guest", &[PROFILES]).await;
    let parquet_without_file = sql(&s, "analyst", "analyst", &["-f", "parquet", "SELECT 1"]).await;
    for out in [&wrong_password, &bad_sql, &denied, &parquet_without_file] {
        assert_eq!(out.status.code(), Some(1), "{}", text(out));
        assert!(out.stdout.is_empty(), "{}", text(out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr)
                .trim_end()
                .lines()
                .count(),
            1,
            "{}",
            text(out)
        );
    }
    insta::assert_snapshot!("sql_error_password", text(&wrong_password));
    insta::assert_snapshot!("sql_error_syntax", text(&bad_sql));
    insta::assert_snapshot!("sql_error_denied", text(&denied));
    insta::assert_snapshot!("sql_error_parquet", text(&parquet_without_file));
}

async fn meshgate(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(args)
        .current_dir(crate::common::repo())
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn lint_passes_the_sample_contracts_and_locates_format_and_governance_errors() {
    let clean = meshgate(&["lint"]).await;
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    insta::assert_snapshot!("lint_clean", text(&clean));

    // tests/ has no governance.yaml of its own: name the mesh's.
    let lab = meshgate(&[
        "lint",
        "tests/fixtures/lab",
        "--governance",
        "contracts/governance.yaml",
    ])
    .await;
    assert_eq!(lab.status.code(), Some(1), "{}", text(&lab));
    insta::assert_snapshot!("lint_lab", text(&lab));

    let json = meshgate(&[
        "lint",
        "--json",
        "tests/fixtures/lab/ungoverned.yaml",
        "--governance",
        "contracts/governance.yaml",
    ])
    .await;
    assert_eq!(json.status.code(), Some(1));
    let line: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(line["rule"], "pii_name_patterns", "{line}");
    assert_eq!(
        (line["line"].as_u64(), line["column"].as_u64()),
        (Some(16), Some(5))
    );

    let missing = meshgate(&["lint", "tests/fixtures/lab/nope.yaml"]).await;
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    insta::assert_snapshot!("lint_missing_file", text(&missing));
}

#[tokio::test]
async fn diff_classifies_changes_and_refuses_a_breaking_change_without_a_new_major() {
    let v1 = "contracts/customers/customer_profiles_v1.yaml";
    let v2 = "contracts/customers/customer_profiles_v2.yaml";
    let ok = meshgate(&["diff", v1, v2]).await;
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    insta::assert_snapshot!("diff_v1_v2", text(&ok));

    // The same change published under the old major.
    let dir = tempfile::tempdir().unwrap();
    let same_major = dir.path().join("profiles.yaml");
    let text_v2 = std::fs::read_to_string(crate::common::repo().join(v2)).unwrap();
    std::fs::write(&same_major, text_v2.replace("version: v2", "version: v1")).unwrap();
    let refused = meshgate(&["diff", v1, same_major.to_str().unwrap()]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("breaking changes need a new major"),
        "{}",
        text(&refused)
    );

    // A security-relevant change passes by default, fails with --fail-on security.
    let loosened = dir.path().join("loosened.yaml");
    std::fs::write(
        &loosened,
        text_v2.replace("    row_filter: \"region = 'EU'\"\n", ""),
    )
    .unwrap();
    let args = ["diff", v2, loosened.to_str().unwrap(), "--json"];
    let json = meshgate(&args).await;
    assert_eq!(json.status.code(), Some(0), "{}", text(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["changes"][0]["impact"], "security", "{v}");
    assert_eq!(
        v["changes"][0]["field"],
        "access_policy.eu_support.row_filter"
    );
    let strict = meshgate(&[&args[..3], &["--fail-on", "security"]].concat()).await;
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict));

    // Against a git revision: the committed file equals itself.
    let git = meshgate(&["diff", &format!("HEAD:{v2}"), v2]).await;
    assert_eq!(git.status.code(), Some(0), "{}", text(&git));
    assert!(String::from_utf8_lossy(&git.stdout).contains("no change"));
    let bad_rev = meshgate(&["diff", "no-such-rev:contracts/x.yaml", v2]).await;
    assert_eq!(bad_rev.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_rev.stderr).contains("cannot read no-such-rev:"));
}

#[tokio::test]
async fn check_reports_breaches_and_fails_and_names_what_it_cannot_find() {
    let dir = tempfile::tempdir().unwrap();
    super::checks::shop_mesh(dir.path());
    let config = dir.path().join("meshgate.yaml");
    std::fs::write(&config, "mesh:\n  contracts: contracts\n  data: data\n").unwrap();
    let config = config.to_str().unwrap();

    let human = meshgate(&["check", "--config", config]).await;
    assert_eq!(human.status.code(), Some(1), "{}", text(&human));
    let out = String::from_utf8_lossy(&human.stdout);
    for expected in [
        "shop.orders v1 (owner team-shop@company.com): 10 rows",
        "quality    30.000% of rows pass every check (SLA 90.00%) BREACHED",
        "by column updated_at (SLA 1h) BREACHED",
        "check      id unique: 2 failing rows",
        "governance note is not PII but 1 rows look like e-mail",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in\n{out}");
    }
    assert!(!out.contains("x@y.com"), "a report never shows values");

    let json = meshgate(&["check", "--config", config, "--json", "shop.orders_v1"]).await;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["quality_ok"], false);
    assert_eq!(v["rows"], 10);

    let none = meshgate(&["check", "--config", config, "shop.nothing"]).await;
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no product matches shop.nothing"));
}

#[tokio::test]
async fn init_writes_a_contract_that_passes_lint_and_governance() {
    let dir = tempfile::tempdir().unwrap();
    let contracts = dir.path().join("contracts");
    std::fs::create_dir_all(&contracts).unwrap();
    std::fs::copy(
        crate::common::repo().join("contracts/governance.yaml"),
        contracts.join("governance.yaml"),
    )
    .unwrap();
    let c = contracts.to_str().unwrap();
    let init = meshgate(&["init", "shop", "orders", "--contracts", c]).await;
    assert_eq!(init.status.code(), Some(0), "{}", text(&init));
    let lint = meshgate(&["lint", c]).await;
    assert_eq!(lint.status.code(), Some(0), "{}", text(&lint));
    assert!(String::from_utf8_lossy(&lint.stderr).contains("format and governance, 0 error"));
    let again = meshgate(&["init", "shop", "orders", "--contracts", c]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let bad = meshgate(&["init", "Shop!", "orders", "--contracts", c]).await;
    assert_eq!(
        bad.status.code(),
        Some(2),
        "clap refuses a bad name: {}",
        text(&bad)
    );
}

async fn catalog(s: &TestServer, user: &str, args: &[&str]) -> Output {
    client_verb(s, "catalog", user, user, args).await
}

#[tokio::test]
async fn catalog_lists_and_describes_products_for_the_callers_roles() {
    let s = TestServer::start().await;
    insta::assert_snapshot!(
        "catalog_list_marketer",
        text(&catalog(&s, "marketer", &[]).await)
    );
    insta::assert_snapshot!(
        "catalog_describe_marketer",
        text(&catalog(&s, "marketer", &["customers.customer_profiles"]).await)
    );
    let analyst = catalog(&s, "analyst", &["customers.customer_profiles_v1"]).await;
    let out = String::from_utf8_lossy(&analyst.stdout);
    assert!(out.contains("customers.customer_profiles v1"), "{out}");
    assert!(out.contains("your access  read"), "{out}");
    let email = out.lines().find(|l| l.starts_with("email ")).unwrap();
    assert_eq!(
        email.split_whitespace().nth(4),
        Some("clear"),
        "the analyst sees e-mails in the clear: {email}"
    );
    let search = catalog(&s, "guest", &["--search", "SKU"]).await;
    let out = String::from_utf8_lossy(&search.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("inventory.stock_levels v1")
                && l.split_whitespace().nth(2) == Some("none")),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    let missing = catalog(&s, "analyst", &["nope.nothing"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no data product nope.nothing"));
}

/// The catalog API refuses callers without a valid token, like every Flight RPC.
#[tokio::test]
async fn catalog_api_requires_a_token() {
    use meshgate_proto::catalog::ListProductsRequest;
    use meshgate_proto::catalog::catalog_service_client::CatalogServiceClient;
    let s = TestServer::start().await;
    let mut c = CatalogServiceClient::new(s.channel().await);
    let err = c
        .list_products(ListProductsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(ListProductsRequest::default());
    req.metadata_mut()
        .insert("authorization", "Bearer mg1.forged".parse().unwrap());
    assert_eq!(
        c.list_products(req).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
}

/// `meshgate serve` on `config` without MESHGATE_HASH_KEY: the marketer's hash of one
/// e-mail, and what the process wrote to its standard error.
async fn serve_without_a_key(config: &std::path::Path) -> (String, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--pg-addr", "127.0.0.1:0"])
        .env_remove("MESHGATE_HASH_KEY")
        .env("MESHGATE_TOKEN_KEY", "cli-test-token-key-0123456789")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines.next_line().await.unwrap().expect("serve started");
    let addr = banner
        .split("grpc://")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap()
        .to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args([
            "sql",
            "--url",
            &format!("grpc://{addr}"),
            "-u",
            "marketer",
            "-f",
            "csv",
        ])
        .arg("SELECT email FROM customers.customer_profiles WHERE customer_id = 'C000000'")
        .env("MESHGATE_PASSWORD", "marketer")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    child.kill().await.unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    (hash, stderr)
}

#[tokio::test]
async fn serve_without_a_hash_key_makes_a_private_one_once_and_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let repo = crate::common::repo();
    let config = std::fs::read_to_string(repo.join("meshgate.yaml"))
        .unwrap()
        .replace(
            "contracts: contracts",
            &format!("contracts: {}", repo.join("contracts").display()),
        )
        .replace(
            "data: sample-data",
            &format!("data: {}", repo.join("sample-data").display()),
        )
        .replace("audit_file: meshgate-audit.log", "audit_file: audit.log");
    let path = dir.path().join("meshgate.yaml");
    std::fs::write(&path, config).unwrap();
    let key_file = dir.path().join(".meshgate/hash.key");

    let (first, log) = serve_without_a_key(&path).await;
    assert_eq!(first.len(), 64, "{first}");
    assert!(log.contains(&key_file.display().to_string()), "{log}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let key = std::fs::read_to_string(&key_file).unwrap();
    let key = key.trim();
    assert_eq!(key.len(), 64);
    // The same key on the next start: the same hash.
    let (second, log2) = serve_without_a_key(&path).await;
    assert_eq!(first, second);
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    for text in [&log, &log2, &audit] {
        assert!(!text.contains(key), "the key was shown");
    }
}
