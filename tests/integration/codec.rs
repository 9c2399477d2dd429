//! A masked physical plan serialized with datafusion-proto, as it would travel to another
//! process (docs/DESIGN.md §9): it comes back with its masks only through meshgate's codec holding
//! the same hash key. No codec, an impostor function of the mask's name, another key, an
//! unknown format version or mask kind: the plan does not decode.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionContext;
use datafusion_proto::bytes::{
    physical_plan_from_bytes, physical_plan_from_bytes_with_extension_codec,
    physical_plan_to_bytes_with_extension_codec,
};
use meshgate_policy::HashKey;
use meshgate_policy::codec::{FORMAT_VERSION, MeshCodec};

use crate::common::{TEST_KEY, TestMesh, key};

const SQL: &str = "SELECT customer_id, email, region FROM customers.customer_profiles \
                   WHERE region = 'EU' ORDER BY customer_id";

async fn masked_plan(mesh: &TestMesh) -> (Arc<dyn ExecutionPlan>, Arc<TaskContext>) {
    let session = mesh.session("marketer");
    let df = session.sql(SQL).await.unwrap();
    let plan = df.create_physical_plan().await.unwrap();
    (plan, session.context().task_ctx())
}

fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "same length keeps the protobuf valid");
    let i = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in the encoded plan"));
    let mut out = bytes.to_vec();
    out[i..i + from.len()].copy_from_slice(to.as_bytes());
    out
}

fn err(r: datafusion::common::Result<Arc<dyn ExecutionPlan>>) -> String {
    match r {
        Ok(p) => panic!("decoded: {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn masked_plans_decode_only_through_the_codec_with_the_same_key() {
    let mesh = TestMesh::load().await;
    let (plan, task) = masked_plan(&mesh).await;
    let expected: Vec<RecordBatch> = collect(Arc::clone(&plan), Arc::clone(&task)).await.unwrap();
    let emails = arrow::compute::cast(expected[0].column(1), &DataType::Utf8).unwrap();
    let first = arrow::array::AsArray::as_string::<i32>(&emails).value(0);
    assert_eq!(
        first.len(),
        64,
        "the marketer's e-mails are hashed: {first}"
    );

    let codec = MeshCodec::new(key());
    let bytes = physical_plan_to_bytes_with_extension_codec(plan, &codec).unwrap();
    let key_id = key().id().to_string();
    let mask = format!("meshgate.mask/{FORMAT_VERSION}/hash/{key_id}");
    assert!(
        bytes.windows(mask.len()).any(|w| w == mask.as_bytes()),
        "the mask travels as kind, version and key id"
    );
    assert!(
        !bytes.windows(TEST_KEY.len()).any(|w| w == TEST_KEY),
        "the key itself never travels"
    );

    // The same codec and key: the same rows, masks included.
    let back = physical_plan_from_bytes_with_extension_codec(&bytes, &task, &codec).unwrap();
    assert_eq!(collect(back, Arc::clone(&task)).await.unwrap(), expected);

    // Another key: refused, naming both ids.
    let other = HashKey::new(b"another-deployment-key-0123").unwrap();
    let e = err(physical_plan_from_bytes_with_extension_codec(
        &bytes,
        &task,
        &MeshCodec::new(Arc::new(other.clone())),
    ));
    assert!(e.contains(&key_id) && e.contains(other.id()), "{e}");

    // No meshgate codec, even with an impostor registered under the mask's name: the
    // product scan and the masks are extension nodes only the codec decodes.
    let e = err(physical_plan_from_bytes(&bytes, &task));
    assert!(e.contains("PhysicalExtensionCodec is not provided"), "{e}");
    let impostor = create_udf(
        "mask_hash",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| Ok(args[0].clone())),
    );
    let with_impostor = SessionContext::new();
    with_impostor.register_udf(impostor);
    err(physical_plan_from_bytes(&bytes, &with_impostor.task_ctx()));

    // A format version or mask kind this build does not know.
    let version = format!("meshgate.mask/{FORMAT_VERSION}/");
    let (kind, bad_kind) = (
        format!("/{FORMAT_VERSION}/hash/"),
        format!("/{FORMAT_VERSION}/hush/"),
    );
    for (from, to, says) in [
        (version.as_str(), "meshgate.mask/9/", "format version"),
        (kind.as_str(), bad_kind.as_str(), "unknown mask kind"),
    ] {
        let tampered = replace(&bytes, from, to);
        let e = err(physical_plan_from_bytes_with_extension_codec(
            &tampered, &task, &codec,
        ));
        assert!(e.contains(says), "{from} → {to}: {e}");
    }
}
