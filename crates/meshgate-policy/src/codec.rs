//! How a masked physical plan travels to another process (a Ballista executor, docs/DESIGN.md §9)
//! with its policy intact: a `datafusion-proto` extension codec for meshgate's operators
//! (the product scan, which carries its Parquet scan and row filter inside it; decoded, it
//! is the cluster's form, [`ProductScanExec::in_cluster`]) and masks.
//!
//! A mask is written as `(kind, format version, key id)`, never as a function name, so that
//! decoding cannot resolve it from a registry where a same-named impostor could wait, and
//! never with its key: each process reads the key from its own `MESHGATE_HASH_KEY` and
//! refuses a mask made under another one. A process without this codec cannot decode the
//! plan at all. Anything unknown (kind, version, key id, operator) fails the decode.

use std::any::Any;
use std::sync::Arc;

use datafusion::common::{Result, internal_err, not_impl_err, plan_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::PhysicalPlanNode;
use meshgate_contract::MaskKind;
use meshgate_mesh::{Disclosure, ProductScanExec};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::HashKey;
use crate::udf::MaskUdf;

/// The encoding of masks and product scans this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;

const MASK: &str = "meshgate.mask";
const SCAN: &str = "meshgate.scan";

/// What a product scan says about itself; its Parquet scan follows as a plan.
#[derive(Serialize, Deserialize)]
struct ScanHeader {
    product: String,
    location: String,
    /// Columns whose statistics stay hidden; `None` when rows are hidden.
    masked: Option<Vec<String>>,
}

/// The codec of one process, with that process's hash key.
#[derive(Debug)]
pub struct MeshCodec {
    key: Arc<HashKey>,
}

impl MeshCodec {
    pub fn new(key: Arc<HashKey>) -> Self {
        MeshCodec { key }
    }

    /// Whether `node` is one of meshgate's operators, written by this codec.
    pub fn encodes(node: &dyn ExecutionPlan) -> bool {
        (node as &dyn Any).is::<ProductScanExec>()
    }
}

/// Whether `buf` was written by this codec: a composite codec hands those to it.
pub fn is_meshgate_encoding(buf: &[u8]) -> bool {
    buf.starts_with(format!("{MASK}/").as_bytes()) || buf.starts_with(format!("{SCAN}/").as_bytes())
}

/// Whether `name` is the name a mask is planned under. A function of that name that
/// arrives without its encoding is refused, never looked up.
pub fn is_mask_name(name: &str) -> bool {
    MaskKind::ALL
        .into_iter()
        .any(|k| name.strip_prefix("mask_") == Some(&k.to_string()))
}

/// `meshgate.mask/1/hash/1a2b3c4d`: what, in which format, under which key.
fn encode_mask(kind: MaskKind, key_id: &str) -> Vec<u8> {
    format!("{MASK}/{FORMAT_VERSION}/{kind}/{key_id}").into_bytes()
}

/// The fields after `tag/version/`, or why the value is refused.
fn fields<'a>(buf: &'a [u8], tag: &str) -> Result<Vec<&'a str>> {
    let text = std::str::from_utf8(buf).or_else(|_| plan_err!("malformed {tag} encoding"))?;
    let mut parts = text.split('/');
    if parts.next() != Some(tag) {
        return plan_err!("not a {tag} encoding: {text:?}");
    }
    let version = parts.next().unwrap_or_default();
    if version != FORMAT_VERSION.to_string() {
        return plan_err!(
            "{tag} encoded in format version {version:?}; this meshgate reads version {FORMAT_VERSION}"
        );
    }
    Ok(parts.collect())
}

/// `meshgate.scan/2/<header JSON>\n<the inner plan, protobuf>`.
fn split_scan(buf: &[u8]) -> Result<(ScanHeader, &[u8])> {
    let Some(newline) = buf.iter().position(|b| *b == b'\n') else {
        return plan_err!("malformed {SCAN} encoding");
    };
    let f = fields(&buf[..newline], SCAN)?;
    let header = f.join("/");
    let header: ScanHeader =
        serde_json::from_str(&header).or_else(|e| plan_err!("malformed {SCAN} header: {e}"))?;
    Ok((header, &buf[newline + 1..]))
}

impl PhysicalExtensionCodec for MeshCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (header, plan) = split_scan(buf)?;
        // From the gateway the inner plan travels inside the scan; between cluster
        // processes (scheduler to executor) it is the scan's one input.
        let inner = match inputs {
            [] => {
                let node = PhysicalPlanNode::decode(plan)
                    .or_else(|e| plan_err!("malformed plan in a product scan: {e}"))?;
                proto_converter
                    .proto_to_execution_plan(&node, &PhysicalPlanDecodeContext::new(ctx, self))?
            }
            [inner] if plan.is_empty() => Arc::clone(inner),
            _ => return plan_err!("a product scan has one plan inside it"),
        };
        let disclosure = match header.masked {
            None => Disclosure::RowsHidden,
            Some(c) if c.is_empty() => Disclosure::Full,
            Some(c) => Disclosure::Masked(c.into_iter().collect()),
        };
        Ok(Arc::new(
            ProductScanExec::new(header.product, header.location, disclosure, inner, None)?
                .in_cluster(),
        ))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let Some(scan) = (node.as_ref() as &dyn Any).downcast_ref::<ProductScanExec>() else {
            return not_impl_err!("meshgate cannot encode operator {}", node.name());
        };
        let header = ScanHeader {
            product: scan.product().to_string(),
            location: scan.location().to_string(),
            masked: match scan.disclosure() {
                Disclosure::RowsHidden => None,
                Disclosure::Full => Some(vec![]),
                Disclosure::Masked(c) => Some(c.iter().cloned().collect()),
            },
        };
        let header = serde_json::to_string(&header)
            .or_else(|e| internal_err!("cannot write a product scan header: {e}"))?;
        buf.extend(format!("{SCAN}/{FORMAT_VERSION}/{header}\n").into_bytes());
        // Inside the cluster the inner plan is the scan's child, encoded as its input.
        if scan.children().is_empty() {
            let inner = proto_converter.execution_plan_to_proto(scan.inner(), self)?;
            buf.extend(inner.encode_to_vec());
        }
        Ok(())
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        let f = fields(buf, MASK)?;
        let [kind, key_id] = f.as_slice() else {
            return plan_err!("malformed mask encoding for {name}");
        };
        let Some(kind) = MaskKind::ALL.into_iter().find(|k| k.to_string() == *kind) else {
            return plan_err!("unknown mask kind {kind:?}");
        };
        if *key_id != self.key.id() {
            return plan_err!(
                "mask {kind} was planned under hash key {key_id}, this process holds key {}: \
                 every process must use the same MESHGATE_HASH_KEY",
                self.key.id()
            );
        }
        let udf = MaskUdf::new(kind, Arc::clone(&self.key));
        if name != udf.name_str() {
            return internal_err!("mask {kind} arrived under the name {name}");
        }
        Ok(Arc::new(ScalarUDF::new_from_impl(udf)))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        let inner: &dyn Any = node.inner().as_ref();
        if let Some(mask) = inner.downcast_ref::<MaskUdf>() {
            buf.extend(encode_mask(mask.kind(), mask.key_id()));
        }
        // Anything else is a built-in, resolved by name on the other side as usual.
        Ok(())
    }
}
