//! The Arrow Flight face of the cache (spec Annex A), for flamepy 0.6.0 and any Flight client.
//!
//! | Flight call | What the cache does |
//! |---|---|
//! | `do_put`, PATH `<app>/<ssn>[/<id>]` | put (a fresh UUID id for a prefix); the answer's `app_metadata` is the BSON `ObjectRef` |
//! | `do_put`, CMD `PATCH:<key>` | append a patch; NOT_FOUND when the object does not exist |
//! | `do_get`, ticket `<key>:<version>` | not modified (schema, no rows), the missing patches, or base plus patches, ZSTD-compressed; native tables as stored with `flame.cache.version` |
//! | `do_action DELETE` | delete a key, `<app>/<ssn>` or `<app>/*` on every cache; answers `OK` |
//! | `get_flight_info`, PATH | one endpoint: ticket = the path, location = the advertised endpoint |
//! | `list_flights` | every object of the cluster whose key starts with the criteria's expression |
//! | `get_schema`, PATH | the get schema, or a native table's own schema |
//! | `list_actions` | `DELETE` |
//!
//! `handshake`, `do_exchange` and `poll_flight_info` answer UNIMPLEMENTED, as upstream's do.
//!
//! Why the encoding runs on a blocking thread: compressing a large object takes a while, and
//! the async workers must keep serving other calls meanwhile.
//!
//! Caveat: a put is read completely (up to the object size limit) before it is stored, so the
//! cache needs memory for the largest put in flight; the limit bounds it.

use crate::error::{CacheError, CacheResult};
use crate::key::{KeyPattern, PutTarget};
use crate::node::{CacheNode, Served};
use crate::objref::ObjectRef;
use crate::wire::{self, PayloadBuilder, PutRequest, Ticket};
use arrow_array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult,
};
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

/// The Flight service of one cache.
#[derive(Debug, Clone)]
pub struct FlightFace {
    node: Arc<CacheNode>,
    ipc: IpcWriteOptions,
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

impl FlightFace {
    /// The face of `node`, compressing responses with ZSTD at `zstd_level`.
    pub fn new(node: Arc<CacheNode>, zstd_level: i32) -> CacheResult<FlightFace> {
        Ok(FlightFace {
            node,
            ipc: wire::ipc_write_options(zstd_level)?,
        })
    }

    fn fail(&self, err: CacheError) -> Status {
        self.node.metrics().errors.inc();
        tracing::debug!(error = %err, "a cache request failed");
        Status::from(err)
    }

    fn path(descriptor: &FlightDescriptor) -> CacheResult<String> {
        if descriptor.path.is_empty() {
            return Err(CacheError::InvalidArgument(
                "the descriptor must be a PATH naming an object".into(),
            ));
        }
        Ok(descriptor.path.join("/"))
    }

    fn info(
        &self,
        descriptor: FlightDescriptor,
        path: &str,
        size: Option<u64>,
        reference: Option<ObjectRef>,
    ) -> CacheResult<FlightInfo> {
        let endpoint = FlightEndpoint::new()
            .with_ticket(arrow_flight::Ticket::new(Bytes::from(path.to_owned())))
            .with_location(self.node.settings().advertised_endpoint.clone());
        let mut info = FlightInfo::new()
            .try_with_schema(&wire::get_schema())
            .map_err(|e| CacheError::Internal(format!("encoding the get schema: {e}")))?
            .with_descriptor(descriptor)
            .with_endpoint(endpoint)
            .with_total_bytes(size.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX)));
        if let Some(reference) = reference {
            info = info.with_app_metadata(reference.to_bson());
        }
        Ok(info)
    }

    /// Reads a put: its descriptor, then every batch into a payload.
    async fn receive_put(
        &self,
        mut input: Streaming<FlightData>,
    ) -> CacheResult<(PutRequest, wire::Payload)> {
        let first = input
            .message()
            .await
            .map_err(|s| CacheError::InvalidArgument(format!("reading the put: {}", s.message())))?
            .ok_or_else(|| CacheError::InvalidArgument("the put stream is empty".into()))?;
        let request = PutRequest::from_descriptor(first.flight_descriptor.as_ref())?;
        let what = match &request {
            PutRequest::Put(PutTarget::Key(key)) => format!("object {key}"),
            PutRequest::Put(PutTarget::Prefix { app, session }) => {
                format!("object under {app}/{session}")
            }
            PutRequest::Patch(key) => format!("patch of {key}"),
        };
        let limit = usize::try_from(self.node.settings().max_object_size).unwrap_or(usize::MAX);
        let mut builder = PayloadBuilder::new(what, limit);
        let rest = input.map_err(|s| FlightError::Tonic(Box::new(s)));
        let mut batches = FlightRecordBatchStream::new_from_flight_data(
            futures::stream::once(async { Ok(first) }).chain(rest),
        );
        while let Some(batch) = batches.try_next().await.map_err(|e| {
            CacheError::InvalidArgument(format!("the put's Arrow data does not decode: {e}"))
        })? {
            builder.push(batch)?;
        }
        let payload = builder.finish(batches.schema())?;
        Ok((request, payload))
    }

    async fn put(&self, input: Streaming<FlightData>) -> CacheResult<PutResult> {
        let (request, payload) = self.receive_put(input).await?;
        let reference = match request {
            PutRequest::Put(target) => self.node.put(target, payload).await?,
            PutRequest::Patch(key) => match payload {
                wire::Payload::Blob(delta) => self.node.patch(key, delta).await?,
                wire::Payload::Table(_) => {
                    return Err(CacheError::InvalidArgument(
                        "a patch must be binary data rows, not a native table".into(),
                    ));
                }
            },
        };
        Ok(PutResult {
            app_metadata: Bytes::from(reference.to_bson()),
        })
    }

    /// The batches and schema of a get answer.
    fn answer(served: Served) -> CacheResult<(SchemaRef, Vec<RecordBatch>)> {
        match served {
            Served::Rows { rows, .. } if rows.is_empty() => Ok((wire::get_schema(), Vec::new())),
            Served::Rows { rows, .. } => {
                Ok((wire::get_schema(), vec![wire::response_batch(&rows)?]))
            }
            Served::Table { version, ipc } => {
                let (schema, batches) = wire::ipc_to_table(&ipc)?;
                wire::table_with_version(&schema, batches, version)
            }
        }
    }

    /// Encodes a get answer into Flight messages on a blocking thread.
    async fn encode(
        &self,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> CacheResult<Vec<FlightData>> {
        let options = self.ipc.clone();
        tokio::task::spawn_blocking(move || {
            let encoder = FlightDataEncoderBuilder::new()
                .with_options(options)
                .with_schema(schema)
                .build(futures::stream::iter(batches.into_iter().map(Ok)));
            futures::executor::block_on(encoder.try_collect::<Vec<_>>())
        })
        .await
        .map_err(|e| CacheError::Internal(format!("an encoding task failed: {e}")))?
        .map_err(|e| CacheError::Internal(format!("encoding the answer: {e}")))
    }
}

#[tonic::async_trait]
impl FlightService for FlightFace {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("the Flame cache needs no handshake"))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let prefix = String::from_utf8(request.into_inner().expression.to_vec()).map_err(|_| {
            self.fail(CacheError::InvalidArgument(
                "the list criteria is not UTF-8".into(),
            ))
        })?;
        let metas = self.node.list(&prefix).await.map_err(|e| self.fail(e))?;
        let mut infos = Vec::with_capacity(metas.len());
        for meta in metas {
            let key = meta.key.to_string();
            let reference = ObjectRef {
                endpoint: self.node.settings().advertised_endpoint.clone(),
                key: key.clone(),
                version: meta.version(),
            };
            let descriptor = FlightDescriptor::new_path(vec![key.clone()]);
            infos.push(Ok(self
                .info(descriptor, &key, Some(meta.size()), Some(reference))
                .map_err(|e| self.fail(e))?));
        }
        Ok(Response::new(futures::stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        let path = Self::path(&descriptor).map_err(|e| self.fail(e))?;
        PutTarget::parse(&path).map_err(|e| self.fail(e))?;
        Ok(Response::new(
            self.info(descriptor, &path, None, None)
                .map_err(|e| self.fail(e))?,
        ))
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "poll_flight_info is not implemented by the Flame cache",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let path = Self::path(&request.into_inner()).map_err(|e| self.fail(e))?;
        let schema = match crate::key::ObjectKey::parse(&path) {
            Ok(key) => match self.node.get(&key, 0).await {
                Ok(Served::Table { ipc, .. }) => {
                    wire::ipc_to_table(&ipc).map_err(|e| self.fail(e))?.0
                }
                Ok(Served::Rows { .. }) => wire::get_schema(),
                Err(e) => return Err(self.fail(e)),
            },
            Err(_) => wire::get_schema(),
        };
        let result = SchemaAsIpc::new(&schema, &self.ipc).try_into().map_err(
            |e: arrow_schema::ArrowError| {
                self.fail(CacheError::Internal(format!("encoding a schema: {e}")))
            },
        )?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = Ticket::parse(&request.into_inner().ticket).map_err(|e| self.fail(e))?;
        let served = self
            .node
            .get(&ticket.key, ticket.version)
            .await
            .map_err(|e| self.fail(e))?;
        let (schema, batches) = Self::answer(served).map_err(|e| self.fail(e))?;
        let messages = self
            .encode(schema, batches)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(Response::new(
            futures::stream::iter(messages.into_iter().map(Ok)).boxed(),
        ))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let result = self
            .put(request.into_inner())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(Response::new(
            futures::stream::once(async { Ok(result) }).boxed(),
        ))
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented(
            "do_exchange is not implemented by the Flame cache",
        ))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != wire::DELETE_ACTION {
            let err = CacheError::InvalidArgument(format!(
                "unknown action {:?}; the cache knows {}",
                action.r#type,
                wire::DELETE_ACTION
            ));
            return Err(self.fail(err));
        }
        let body = std::str::from_utf8(&action.body).map_err(|_| {
            self.fail(CacheError::InvalidArgument(
                "the DELETE body is not UTF-8".into(),
            ))
        })?;
        let pattern = KeyPattern::parse(body).map_err(|e| self.fail(e))?;
        let count = self.node.delete(&pattern).await.map_err(|e| self.fail(e))?;
        tracing::info!(%pattern, count, "deleted objects");
        let ok = arrow_flight::Result {
            body: Bytes::from_static(b"OK"),
        };
        Ok(Response::new(
            futures::stream::once(async { Ok(ok) }).boxed(),
        ))
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let delete = ActionType {
            r#type: wire::DELETE_ACTION.into(),
            description:
                "Delete an object, <app>/<session> or <app>/*; the body is the key or pattern"
                    .into(),
        };
        Ok(Response::new(
            futures::stream::once(async { Ok(delete) }).boxed(),
        ))
    }
}
