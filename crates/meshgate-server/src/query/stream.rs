//! A running statement's result: batches in the wire schema, under the query timeout,
//! with its audit line written once however the stream ends.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::{SendableRecordBatchStream, execute_stream};
use futures::{FutureExt, Stream, StreamExt};
use tracing::warn;

use super::{ErrorKind, Planned, QueryEngine, QueryError, Slot, fill_policies};
use crate::audit::AuditRecord;

impl QueryEngine {
    /// Executes a planned query as a stream of batches in the wire schema, under the
    /// query timeout; the audit record is written when the stream ends or is dropped
    /// (client gone: the query is cancelled with it).
    pub fn execute(
        self: &Arc<Self>,
        planned: Planned,
        slot: Slot,
        mut record: AuditRecord,
        started: Instant,
    ) -> Result<impl Stream<Item = Result<RecordBatch, QueryError>> + Send + use<>, QueryError>
    {
        let stream: SendableRecordBatchStream =
            execute_stream(Arc::clone(&planned.physical), planned.task)?;
        fill_policies(&mut record, &planned.applied);
        record.engine = Some(planned.route.engine.to_string());
        record.route = Some(planned.route.reason.clone());
        self.metrics.active_queries.inc();
        let deadline = tokio::time::Instant::now() + slot.timeout;
        let (max_rows, max_bytes) = (slot.max_rows, slot.max_bytes);
        let role = slot.role.clone().unwrap_or_default();
        let guard = QueryGuard {
            engine: Arc::clone(self),
            job_id: planned.job_id,
            record,
            started,
            outcome: None,
            _slot: slot,
        };
        let wire = planned.wire_schema;
        // One timer for the whole statement, not one registered and cancelled per batch.
        let timeout = Box::pin(tokio::time::sleep_until(deadline));
        let state = (stream, guard, timeout, false);
        Ok(futures::stream::unfold(
            state,
            move |(mut stream, mut guard, mut timeout, done)| {
                let wire = Arc::clone(&wire);
                let role = role.clone();
                async move {
                    if done {
                        return None;
                    }
                    let next = tokio::select! {
                        next = std::panic::AssertUnwindSafe(stream.next()).catch_unwind() => match next {
                            Ok(next) => next,
                            Err(panic) => {
                                let e = QueryError::panicked(panic);
                                guard.finish(Err(&e));
                                return Some((Err(e), (stream, guard, timeout, true)));
                            }
                        },
                        _ = &mut timeout => {
                            let e = QueryError::new(ErrorKind::DeadlineExceeded, "query timeout reached");
                            guard.finish(Err(&e));
                            return Some((Err(e), (stream, guard, timeout, true)));
                        }
                    };
                    let failed = |e: DataFusionError, guard: &mut QueryGuard| {
                        let e = QueryError::from_datafusion(&e);
                        guard.finish(Err(&e));
                        e
                    };
                    match next {
                        None => {
                            guard.finish(Ok(()));
                            None
                        }
                        Some(Ok(batch)) => match to_wire(&batch, &wire) {
                            Ok(batch) => {
                                let rows = guard.record.rows + batch.num_rows() as u64;
                                let bytes =
                                    guard.record.bytes + batch.get_array_memory_size() as u64;
                                let over = match (max_rows, max_bytes) {
                                    (Some(max), _) if rows > max => Some(format!("{max} rows")),
                                    (_, Some(max)) if bytes > max => {
                                        Some(format!("{} MB", max >> 20))
                                    }
                                    _ => None,
                                };
                                if let Some(limit) = over {
                                    let e = QueryError::new(
                                        ErrorKind::ResourceExhausted,
                                        format!(
                                            "role {role}: an answer holds at most {limit}; \
                                             add a LIMIT, filter or aggregate"
                                        ),
                                    );
                                    guard.finish(Err(&e));
                                    return Some((Err(e), (stream, guard, timeout, true)));
                                }
                                guard.record.rows = rows;
                                guard.record.bytes = bytes;
                                Some((Ok(batch), (stream, guard, timeout, false)))
                            }
                            Err(e) => {
                                Some((Err(failed(e, &mut guard)), (stream, guard, timeout, true)))
                            }
                        },
                        Some(Err(e)) => {
                            Some((Err(failed(e, &mut guard)), (stream, guard, timeout, true)))
                        }
                    }
                }
            },
        ))
    }
}

/// Writes the audit record once, however the stream ends, and gives the slot back.
struct QueryGuard {
    engine: Arc<QueryEngine>,
    job_id: Option<Arc<Mutex<Option<String>>>>,
    record: AuditRecord,
    started: Instant,
    outcome: Option<Result<(), QueryError>>,
    _slot: Slot,
}

impl QueryGuard {
    fn finish(&mut self, result: Result<(), &QueryError>) {
        self.outcome = Some(result.map_err(Clone::clone));
    }
}

impl Drop for QueryGuard {
    fn drop(&mut self) {
        let engine = &self.engine;
        engine.metrics.active_queries.dec();
        engine.metrics.rows.inc_by(self.record.rows);
        engine.metrics.bytes.inc_by(self.record.bytes);
        if let Some(job) = &self.job_id {
            self.record.job_id = job.lock().unwrap_or_else(|e| e.into_inner()).clone();
        }
        let cancelled = QueryError::new(
            ErrorKind::Cancelled,
            "the client went away before the end of the result",
        );
        let outcome = match &self.outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(e),
            None => {
                warn!(principal = %self.record.principal, "query cancelled by the client");
                Err(&cancelled)
            }
        };
        engine.audit_now(std::mem::take(&mut self.record), self.started, outcome);
    }
}

fn to_wire(batch: &RecordBatch, wire: &SchemaRef) -> Result<RecordBatch, DataFusionError> {
    if batch.schema().fields() == wire.fields() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(wire.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(Arc::clone(wire), columns)?)
}
