//! How a masked physical plan travels to another process (a Ballista executor, DESIGN §9)
//! with its policy intact: a `datafusion-proto` extension codec for meshgate's operators.
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
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use meshgate_contract::MaskKind;

use crate::HashKey;
use crate::node::PolicyBarrierExec;
use crate::udf::MaskUdf;

/// The encoding of masks and barriers this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MASK: &str = "meshgate.mask";
const BARRIER: &str = "meshgate.barrier";

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
        (node as &dyn Any).is::<PolicyBarrierExec>()
    }
}

/// Whether `buf` was written by this codec: a composite codec hands those to it.
pub fn is_meshgate_encoding(buf: &[u8]) -> bool {
    buf.starts_with(format!("{MASK}/").as_bytes())
        || buf.starts_with(format!("{BARRIER}/").as_bytes())
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

impl PhysicalExtensionCodec for MeshCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let f = fields(buf, BARRIER)?;
        let ([label], [input]) = (f.as_slice(), inputs) else {
            return plan_err!("a policy barrier has a label and one input");
        };
        Ok(Arc::new(PolicyBarrierExec::new(
            Arc::clone(input),
            label.replace("%2F", "/"),
        )))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        match (node.as_ref() as &dyn Any).downcast_ref::<PolicyBarrierExec>() {
            Some(b) => {
                buf.extend(
                    format!(
                        "{BARRIER}/{FORMAT_VERSION}/{}",
                        b.label().replace('/', "%2F")
                    )
                    .into_bytes(),
                );
                Ok(())
            }
            None => not_impl_err!("meshgate cannot encode operator {}", node.name()),
        }
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
