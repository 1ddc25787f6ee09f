//! The OTLP/gRPC span exporter: spans encoded by [`proto`](super::proto) in one pass and sent
//! with tonic as bytes.
//!
//! It covers the plain case, which is every deployment of this suite: an `http://` endpoint,
//! no extra headers, no compression. For anything else (`OTEL_EXPORTER_OTLP_*HEADERS`,
//! `*COMPRESSION`, an `https://` endpoint) [`super::tracer_provider`] uses opentelemetry-otlp's
//! exporter, which implements all of it, at its cost (see the `proto` module).
//!
//! Like that exporter's, a failed export is not retried (the next batch is the retry), and
//! the request's deadline is `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or
//! `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), ten seconds by default.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::PathAndQuery;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio_util::bytes::{Buf, BufMut};
use tonic::Status;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::proto::{self, EncodedResource};

/// The method every OTLP trace receiver serves.
const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The deadline of one export when the environment sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exports batches of spans to an OTLP/gRPC receiver.
#[derive(Debug)]
pub(super) struct GrpcSpanExporter {
    grpc: Grpc<Channel>,
    resource: EncodedResource,
    /// The size of the last request, to allocate the next one at once.
    last_request: AtomicUsize,
    shut_down: AtomicBool,
}

impl GrpcSpanExporter {
    /// An exporter to `endpoint` (`http://host:port`). The channel connects on first use, so
    /// this must run inside the tokio runtime whose tasks drive it.
    pub(super) fn new(endpoint: &str, timeout: Duration) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|err| format!("invalid endpoint {endpoint:?}: {err}"))?;
        Ok(Self {
            grpc: Grpc::new(endpoint.timeout(timeout).connect_lazy()),
            resource: EncodedResource::default(),
            last_request: AtomicUsize::new(0),
            shut_down: AtomicBool::new(false),
        })
    }

    /// The export deadline the environment asks for, in the variables' order of precedence.
    pub(super) fn timeout_from(var: impl Fn(&str) -> Option<String>) -> Duration {
        [
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]
        .into_iter()
        .find_map(|name| var(name)?.trim().parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
    }
}

impl SpanExporter for GrpcSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let mut request = Vec::with_capacity(self.last_request.load(Ordering::Relaxed));
        proto::export_request(&mut request, &self.resource, &batch);
        drop(batch);
        self.last_request.store(request.len(), Ordering::Relaxed);

        let mut grpc = self.grpc.clone();
        let failed =
            |status: Status| OTelSdkError::InternalFailure(format!("export error: {status}"));
        grpc.ready()
            .await
            .map_err(|err| failed(Status::unavailable(err.to_string())))?;
        let path = PathAndQuery::from_static(EXPORT);
        let rejected = grpc
            .unary(tonic::Request::new(request), path, Bytes)
            .await
            .map_err(failed)?
            .into_inner();
        if rejected.spans > 0 || !rejected.message.is_empty() {
            // The collector took the request and refused part of it, on purpose: as the SDK's
            // exporter does, it is reported and not retried.
            tracing::warn!(
                telemetry.rejected = rejected.spans,
                error.message = %rejected.message,
                "the collector rejected spans"
            );
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = EncodedResource::new(resource);
    }
}

/// The collector's answer: how many spans it refused, and why (`ExportTracePartialSuccess`).
#[derive(Debug, Default)]
struct Rejected {
    spans: i64,
    message: String,
}

/// A codec sending requests already encoded, and reading the answer's partial success.
#[derive(Debug, Clone, Copy)]
struct Bytes;

impl Codec for Bytes {
    type Encode = Vec<u8>;
    type Decode = Rejected;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }
    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for Bytes {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Bytes {
    type Item = Rejected;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Rejected>, Status> {
        let mut answer = vec![0; src.remaining()];
        src.copy_to_slice(&mut answer);
        Ok(Some(partial_success(&answer).unwrap_or_default()))
    }
}

/// `ExportTraceServiceResponse.partial_success` (field 1), if the answer holds one that
/// parses: `rejected_spans` (1, int64) and `error_message` (2, string).
fn partial_success(answer: &[u8]) -> Option<Rejected> {
    let mut rejected = Rejected::default();
    for (number, value) in Fields(answer) {
        if let (1, Value::Bytes(inner)) = (number, value) {
            for (number, value) in Fields(inner) {
                match (number, value) {
                    (1, Value::Varint(spans)) => rejected.spans = spans as i64,
                    (2, Value::Bytes(text)) => {
                        rejected.message = String::from_utf8_lossy(text).into_owned();
                    }
                    _ => {}
                }
            }
        }
    }
    Some(rejected)
}

/// A protobuf field's value, as far as this reader needs to tell.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of a protobuf message; stops at the first one that does not parse.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = (u64, Value<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let key = read_varint(&mut self.0)?;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(&mut self.0)?),
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                self.0 = self.0.get(width..)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(read_varint(&mut self.0)?).ok()?;
                let bytes = self.0.get(..len)?;
                self.0 = &self.0[len..];
                Value::Bytes(bytes)
            }
            _ => return None,
        };
        Some((key >> 3, value))
    }
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests;
