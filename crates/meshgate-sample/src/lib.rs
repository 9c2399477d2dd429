//! The sample mesh's data, generated from a fixed seed so that every checkout holds the same
//! bytes and tests can name real values.
//!
//! Products in different domains draw e-mails from one pool of customers, so that a
//! join on the hashed e-mail across domains finds real matches.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

const FIRST: &[&str] = &[
    "alice", "bruno", "chloe", "dmitri", "elena", "farid", "greta", "hiro", "ines", "jonas",
    "kemal", "lucia", "mateo", "nadia", "oscar", "priya", "quentin", "rosa", "sven", "tariq",
    "ursula", "viktor", "wei", "ximena", "yusuf", "zoe",
];
const LAST: &[&str] = &[
    "garcia",
    "muller",
    "rossi",
    "dubois",
    "nowak",
    "silva",
    "tanaka",
    "kim",
    "okafor",
    "smith",
    "jensen",
    "novak",
    "haddad",
    "ivanova",
    "fernandez",
    "schmidt",
    "martin",
    "costa",
];
const STREETS: &[&str] = &[
    "Main St",
    "Rue de Rivoli",
    "Hauptstrasse",
    "Via Roma",
    "Calle Mayor",
    "Baker Street",
    "Elm Avenue",
    "Market Street",
    "Kings Road",
    "Ringstrasse",
];
const REGIONS: &[(&str, &[&str])] = &[
    ("EU", &["DE", "FR", "IT", "ES", "NL", "PL"]),
    ("US", &["US"]),
    ("APAC", &["JP", "SG", "AU", "IN"]),
];
const TIERS: &[&str] = &["bronze", "silver", "gold", "platinum"];
const BROWSERS: &[&str] = &["Firefox/128.0", "Chrome/131.0", "Safari/17.6", "Edg/131.0"];

/// Microseconds of 2026-11-01T00:00:00Z: the generated data is "recent" relative to this.
const T0: i64 = 1_793_491_200_000_000;
const DAY_US: i64 = 86_400_000_000;

pub struct Customer {
    pub id: String,
    pub email: String,
    pub first: &'static str,
    pub last: &'static str,
    pub phone: String,
    pub birth_days: i32,
    pub address: String,
    pub region: &'static str,
    pub country: &'static str,
    pub signup_us: i64,
    pub tier: &'static str,
}

/// The shared customer pool.
pub fn customers(rng: &mut StdRng, n: usize) -> Vec<Customer> {
    (0..n)
        .map(|i| {
            let first = *FIRST.choose(rng).unwrap();
            let last = *LAST.choose(rng).unwrap();
            let (region, countries) = REGIONS[rng.random_range(0..REGIONS.len())];
            Customer {
                id: format!("C{i:06}"),
                email: format!("{first}.{last}{i}@example.com"),
                first,
                last,
                phone: format!(
                    "+{} {:03} {:04} {:04}",
                    rng.random_range(1..99),
                    rng.random_range(100..999),
                    rng.random_range(0..9999),
                    rng.random_range(0..9999)
                ),
                // Born 1950–2005.
                birth_days: rng.random_range(-7305..12_784),
                address: format!(
                    "{} {}, {}",
                    rng.random_range(1..300),
                    STREETS.choose(rng).unwrap(),
                    rng.random_range(10_000..99_999)
                ),
                region,
                country: countries.choose(rng).unwrap(),
                signup_us: T0 - rng.random_range(0..1000) * DAY_US,
                tier: TIERS.choose(rng).unwrap(),
            }
        })
        .collect()
}

fn write(path: &Path, batch: RecordBatch) -> Result<()> {
    std::fs::create_dir_all(path.parent().unwrap())?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(16_384))
        .build();
    let mut w = ArrowWriter::try_new(File::create(path)?, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Schema::new(
        cols.iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(Arc::new(schema), cols.into_iter().map(|(_, a)| a).collect()).unwrap()
}

fn strings<I: IntoIterator<Item = S>, S: AsRef<str>>(v: I) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn ts(v: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC"))
}

/// Writes the whole sample mesh under `root` (normally `sample-data/`), at the fixed time
/// the tests name values by.
pub fn write_sample_mesh(root: &Path, scale: usize) -> Result<()> {
    write_sample_mesh_at(root, scale, T0, T0)
}

/// How long before "now" the deliberately stale product was last updated in
/// [`write_sample_mesh_today`]: past its one-day freshness SLA.
pub const STALE_BY_US: i64 = 3 * DAY_US;

/// The sample mesh as of now (the same rows, times moved): every product meets its
/// freshness SLA on the day it is served, but `inventory.stock_levels`, which stopped
/// updating [`STALE_BY_US`] ago, so a first look at the catalog also shows a breach.
pub fn write_sample_mesh_today(root: &Path, scale: usize) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    write_sample_mesh_at(root, scale, now, now - STALE_BY_US)
}

/// `t0` is the newest time of the products; `stock_t0` that of `inventory.stock_levels`.
fn write_sample_mesh_at(root: &Path, scale: usize, t0: i64, stock_t0: i64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(20261125);
    let mut people = customers(&mut rng, 20_000 * scale);
    for p in &mut people {
        p.signup_us += t0 - T0;
    }

    // checkout.checkout_orders_summary v1, in two files; `card_number` and
    // `internal_notes` are in the files but not in the contract, so never readable.
    let n_orders = 50_000 * scale;
    // Statuses come from their own stream, so the other columns keep their values.
    let mut statuses = StdRng::seed_from_u64(20261201);
    for (part, range) in [(0, 0..n_orders / 2), (1, n_orders / 2..n_orders)] {
        let mut id = Vec::new();
        let mut amount = Vec::new();
        let mut email = Vec::new();
        let mut card = Vec::new();
        let mut notes = Vec::new();
        let mut completed = Vec::new();
        let mut status = Vec::new();
        for i in range {
            id.push(format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                rng.random::<u32>(),
                rng.random::<u16>(),
                i % 4096,
                rng.random_range(0..4096),
                rng.random::<u64>() & 0xffff_ffff_ffff
            ));
            amount.push(rng.random_range(199..250_000i128));
            // A few guest checkouts with an address not in the customer pool.
            email.push(if rng.random_bool(0.05) {
                format!("guest{i}@mail.test")
            } else {
                people.choose(&mut rng).unwrap().email.clone()
            });
            card.push(format!("4111 1111 1111 {:04}", rng.random_range(0..9999)));
            notes.push(if rng.random_bool(0.1) {
                "called support"
            } else {
                ""
            });
            completed.push(t0 - rng.random_range(0..90 * DAY_US));
            // The codes the contract labels: 1 paid … 5 refunded, mostly delivered.
            status.push(match statuses.random_range(0..100) {
                0..8 => 1,
                8..20 => 2,
                20..90 => 3,
                90..96 => 4,
                _ => 5,
            });
        }
        write(
            &root.join(format!(
                "checkout/checkout_orders_summary/v1/part-{part}.parquet"
            )),
            batch(vec![
                ("order_id", strings(id)),
                (
                    "total_amount",
                    Arc::new(Decimal128Array::from(amount).with_precision_and_scale(12, 2)?),
                ),
                ("user_email", strings(email)),
                ("card_number", strings(card)),
                ("internal_notes", strings(notes)),
                ("completed_at", ts(completed)),
                ("status_id", Arc::new(Int32Array::from(status))),
            ]),
        )?;
    }

    // customers.customer_profiles v1 (full_name) and v2 (first_name + last_name).
    let common = |p: &[Customer]| -> Vec<(&'static str, ArrayRef)> {
        vec![
            ("customer_id", strings(p.iter().map(|c| &c.id))),
            ("email", strings(p.iter().map(|c| &c.email))),
            ("phone", strings(p.iter().map(|c| &c.phone))),
            (
                "birth_date",
                Arc::new(Date32Array::from_iter_values(
                    p.iter().map(|c| c.birth_days),
                )),
            ),
            ("street_address", strings(p.iter().map(|c| &c.address))),
            ("region", strings(p.iter().map(|c| c.region))),
            ("country", strings(p.iter().map(|c| c.country))),
            ("signup_at", ts(p.iter().map(|c| c.signup_us).collect())),
            ("loyalty_tier", strings(p.iter().map(|c| c.tier))),
        ]
    };
    let title = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    let mut v1 = common(&people);
    v1.insert(
        2,
        (
            "full_name",
            strings(
                people
                    .iter()
                    .map(|c| format!("{} {}", title(c.first), title(c.last))),
            ),
        ),
    );
    write(
        &root.join("customers/customer_profiles/v1/part-0.parquet"),
        batch(v1),
    )?;
    let mut v2 = common(&people);
    v2.insert(
        2,
        ("first_name", strings(people.iter().map(|c| title(c.first)))),
    );
    v2.insert(
        3,
        ("last_name", strings(people.iter().map(|c| title(c.last)))),
    );
    write(
        &root.join("customers/customer_profiles/v2/part-0.parquet"),
        batch(v2),
    )?;

    // web.web_sessions v1: IP addresses and e-mails of signed-in visitors.
    let n = 40_000 * scale;
    let mut sid = Vec::new();
    let mut email: Vec<Option<String>> = Vec::new();
    let mut ip = Vec::new();
    let mut agent = Vec::new();
    let mut country = Vec::new();
    let mut started = Vec::new();
    let mut views = Vec::new();
    let mut bounced = Vec::new();
    for i in 0..n {
        sid.push(format!("S{i:07}"));
        let who = people.choose(&mut rng).unwrap();
        // Anonymous visitors have no e-mail.
        email.push(rng.random_bool(0.7).then(|| who.email.clone()));
        ip.push(format!(
            "{}.{}.{}.{}",
            rng.random_range(1..224),
            rng.random_range(0..256),
            rng.random_range(0..256),
            rng.random_range(1..255)
        ));
        agent.push(format!(
            "Mozilla/5.0 {}",
            BROWSERS.choose(&mut rng).unwrap()
        ));
        country.push(who.country);
        started.push(t0 - rng.random_range(0..30 * DAY_US));
        let v = rng.random_range(1..40);
        views.push(v);
        bounced.push(v == 1);
    }
    write(
        &root.join("web/web_sessions/v1/part-0.parquet"),
        batch(vec![
            ("session_id", strings(sid)),
            ("user_email", Arc::new(StringArray::from(email))),
            ("ip_address", strings(ip)),
            ("user_agent", strings(agent)),
            ("country", strings(country)),
            ("started_at", ts(started)),
            ("page_views", Arc::new(Int32Array::from(views))),
            ("bounced", Arc::new(BooleanArray::from(bounced))),
        ]),
    )?;

    // inventory.stock_levels v1: no PII at all.
    let n = 10_000 * scale;
    let skus: Vec<String> = (0..n).map(|i| format!("SKU-{:05}", i % 2_500)).collect();
    let warehouses: Vec<&str> = (0..n)
        .map(|i| ["BER1", "PAR2", "NYC1", "SIN1"][i % 4])
        .collect();
    let qty: Vec<i64> = (0..n).map(|_| rng.random_range(0..5_000)).collect();
    let updated: Vec<i64> = (0..n)
        .map(|_| stock_t0 - rng.random_range(0..DAY_US))
        .collect();
    write(
        &root.join("inventory/stock_levels/v1/part-0.parquet"),
        batch(vec![
            ("sku", strings(skus)),
            ("warehouse_id", strings(warehouses)),
            ("quantity", Arc::new(Int64Array::from(qty))),
            ("updated_at", ts(updated)),
        ]),
    )?;
    Ok(())
}
