//! Throughput of each mask on one core over 1M realistic values (values/s in the report).
//! Target (issue 3): `hash` ≥ 5 M values/s.

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, StringArray, TimestampMicrosecondArray};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use meshgate_contract::MaskKind;
use meshgate_policy::HashKey;
use meshgate_policy::masks::apply;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const N: usize = 1_000_000;

fn emails(rng: &mut StdRng) -> ArrayRef {
    Arc::new(StringArray::from_iter_values((0..N).map(|i| {
        format!(
            "customer.{:08}.{}@example-shop.com",
            i,
            rng.random_range(0..1000)
        )
    })))
}

fn phones(rng: &mut StdRng) -> ArrayRef {
    Arc::new(StringArray::from_iter_values((0..N).map(|_| {
        format!(
            "+{} {:03} {:04} {:04}",
            rng.random_range(1..99),
            rng.random_range(100..999),
            rng.random_range(0..9999),
            rng.random_range(0..9999)
        )
    })))
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let key = HashKey::new(b"benchmark-hash-key-0123456789").unwrap();
    let email = emails(&mut rng);
    let phone = phones(&mut rng);
    let dates: ArrayRef = Arc::new(Date32Array::from_iter_values(
        (0..N).map(|_| rng.random_range(-7000..20000)),
    ));
    let ts: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            (0..N).map(|_| rng.random_range(0..1_800_000_000_000_000i64)),
        )
        .with_timezone("UTC"),
    );
    let mut g = c.benchmark_group("mask_1M_values");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    for (kind, input) in [
        (MaskKind::Hash, &email),
        (MaskKind::Email, &email),
        (MaskKind::Last4, &phone),
        (MaskKind::Redact, &email),
        (MaskKind::Null, &email),
        (MaskKind::Year, &dates),
        (MaskKind::Year, &ts),
    ] {
        let name = format!("{kind}/{}", input.data_type());
        g.bench_function(name, |b| b.iter(|| apply(kind, &key, input).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
