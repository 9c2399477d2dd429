//! Bound parameters: the values of `$1`, `$2`… (one Arrow row), how they travel inside a
//! sealed handle, and the map kept for clients that ignore updated handles.

use std::collections::{HashMap, VecDeque};

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use datafusion::common::ParamValues;
use datafusion::scalar::ScalarValue;
use sha2::{Digest, Sha256};

use super::QueryError;

/// The values a statement is planned with.
pub(crate) fn param_values(params: &RecordBatch) -> Result<ParamValues, QueryError> {
    if params.num_rows() != 1 {
        return Err(QueryError::invalid(format!(
            "bind exactly one row of parameters, got {}",
            params.num_rows()
        )));
    }
    let values = params
        .columns()
        .iter()
        .map(|c| ScalarValue::try_from_array(c, 0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QueryError::invalid(format!("unreadable parameter: {e}")))?;
    Ok(values.into())
}

/// One row of parameters as base64 Arrow IPC, to travel in a handle or ticket.
pub(crate) fn encode_params(batch: &RecordBatch) -> Result<String, QueryError> {
    let invalid = |e: arrow::error::ArrowError| QueryError::invalid(e.to_string());
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema()).map_err(invalid)?;
        w.write(batch).map_err(invalid)?;
        w.finish().map_err(invalid)?;
    }
    Ok(STANDARD.encode(buf))
}

pub(crate) fn decode_params(text: &str) -> Result<RecordBatch, QueryError> {
    let malformed = || QueryError::invalid("malformed parameters");
    let bytes = STANDARD.decode(text).map_err(|_| malformed())?;
    let mut reader =
        StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|_| malformed())?;
    reader
        .next()
        .transpose()
        .map_err(|_| malformed())?
        .ok_or_else(|| QueryError::invalid("no parameter row"))
}

/// Parameters bound to a statement handle, by the handle's digest, oldest evicted first:
/// for clients that keep using the handle they bound to (flightsql-dbapi). Bounded;
/// clients that use the updated handle never need it.
#[derive(Default)]
pub(crate) struct BoundParams {
    map: HashMap<[u8; 32], String>,
    order: VecDeque<[u8; 32]>,
}

const MAX_BOUND: usize = 10_000;

impl BoundParams {
    fn key(handle: &[u8]) -> [u8; 32] {
        Sha256::digest(handle).into()
    }

    pub(crate) fn insert(&mut self, handle: &[u8], params: String) {
        let k = Self::key(handle);
        if self.map.insert(k, params).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > MAX_BOUND {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, handle: &[u8]) -> Option<String> {
        // Most clients never bind to a handle they keep: no digest to compute then.
        if self.map.is_empty() {
            return None;
        }
        self.map.get(&Self::key(handle)).cloned()
    }

    pub(crate) fn remove(&mut self, handle: &[u8]) {
        self.map.remove(&Self::key(handle));
    }
}
