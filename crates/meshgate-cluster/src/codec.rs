//! The codecs every cluster process speaks: Ballista's own operators (shuffles, stage
//! readers) plus meshgate's masks and product scans, which only [`MeshCodec`] can write
//! or read. Nothing about a mask is resolved by name: a mask that arrives without its
//! `(kind, version, key id)` encoding is refused, so a registry where a same-named
//! impostor waits is never consulted for one.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::common::{Result, TableReference};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use meshgate_policy::HashKey;
use meshgate_policy::codec::{MeshCodec, is_mask_name, is_meshgate_encoding};

/// Ballista's physical codec with meshgate's operators and masks on top.
#[derive(Debug)]
pub struct ClusterCodec {
    mesh: MeshCodec,
    ballista: BallistaPhysicalExtensionCodec,
}

impl ClusterCodec {
    pub fn new(key: Arc<HashKey>) -> Self {
        ClusterCodec {
            mesh: MeshCodec::new(key),
            ballista: BallistaPhysicalExtensionCodec::default(),
        }
    }
}

/// A mask (or anything that looks like one) is meshgate's to decode; the rest is Ballista's.
fn decode_udf(
    mesh: &MeshCodec,
    name: &str,
    buf: &[u8],
    otherwise: impl FnOnce() -> Result<Arc<ScalarUDF>>,
) -> Result<Arc<ScalarUDF>> {
    if is_meshgate_encoding(buf) || is_mask_name(name) {
        PhysicalExtensionCodec::try_decode_udf(mesh, name, buf)
    } else {
        otherwise()
    }
}

/// A mask is written by meshgate; any other function as Ballista writes it.
fn encode_udf(
    mesh: &MeshCodec,
    node: &ScalarUDF,
    buf: &mut Vec<u8>,
    otherwise: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    PhysicalExtensionCodec::try_encode_udf(mesh, node, buf)?;
    if buf.is_empty() {
        otherwise(buf)?;
    }
    Ok(())
}

impl PhysicalExtensionCodec for ClusterCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if is_meshgate_encoding(buf) {
            self.mesh.try_decode(buf, inputs, ctx, proto_converter)
        } else {
            self.ballista.try_decode(buf, inputs, ctx, proto_converter)
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if MeshCodec::encodes(node.as_ref()) {
            self.mesh.try_encode(node, buf, proto_converter)
        } else {
            self.ballista.try_encode(node, buf, proto_converter)
        }
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(&self.mesh, name, buf, || {
            self.ballista.try_decode_udf(name, buf)
        })
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udf(&self.mesh, node, buf, |buf| {
            self.ballista.try_encode_udf(node, buf)
        })
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}

/// Ballista's logical codec, with masks written and read as in [`ClusterCodec`]. The
/// gateway submits physical plans; this is what the scheduler uses if a logical plan
/// reaches it anyway, so that one cannot carry a mask by name either.
#[derive(Debug)]
pub struct ClusterLogicalCodec {
    mesh: MeshCodec,
    ballista: BallistaLogicalExtensionCodec,
}

impl ClusterLogicalCodec {
    pub fn new(key: Arc<HashKey>) -> Self {
        ClusterLogicalCodec {
            mesh: MeshCodec::new(key),
            ballista: BallistaLogicalExtensionCodec::default(),
        }
    }
}

impl LogicalExtensionCodec for ClusterLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.ballista
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        decode_udf(&self.mesh, name, buf, || {
            self.ballista.try_decode_udf(name, buf)
        })
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        encode_udf(&self.mesh, node, buf, |buf| {
            self.ballista.try_encode_udf(node, buf)
        })
    }
}
