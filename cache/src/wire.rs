//! The Arrow Flight conventions of the cache (spec Annex A), shared by the server and clients.
//!
//! What:
//! - descriptors: a put names `PATH <app>/<ssn>[/<id>]`, a patch `CMD PATCH:<key>`
//!   ([`PutRequest`]);
//! - tickets: `<key>:<client_version>` ([`Ticket`]); a bare key means version 0;
//! - the put schema `{version: UInt64, data: Binary}`, whose `data` rows are concatenated, or
//!   any schema whose metadata says `flame.cache.format = arrow-table-v1`, stored as a native
//!   Arrow table ([`PayloadBuilder`], [`Payload`]);
//! - the get schema `{version: UInt64, kind: Utf8, data: Binary}`, one row per record, `base`
//!   then `patch`es ([`response_batch`], [`decode_response`]); native tables come back as stored
//!   with `flame.cache.version` in their schema metadata ([`table_with_version`]);
//! - the `DELETE` action.
//!
//! Why here: the server decodes what clients encode and the other way round; keeping both
//! directions in one module keeps them in step.
//!
//! Caveats: `data` may be `Binary` or `LargeBinary` in a put. A row's bytes are sliced out of
//! the received Arrow buffer without copying when the put is a single row; several rows are
//! concatenated into one buffer.

use crate::error::{CacheError, CacheResult};
use crate::key::{ObjectKey, PutTarget};
use arrow_array::{Array, BinaryArray, LargeBinaryArray, RecordBatch, StringArray, UInt64Array};
use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow_flight::FlightDescriptor;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_ipc::CompressionType;
use arrow_ipc::writer::IpcWriteOptions;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use bytes::{Bytes, BytesMut};

use std::sync::{Arc, OnceLock};

/// Schema metadata key that marks a put as a native Arrow table.
pub const FORMAT_METADATA_KEY: &str = "flame.cache.format";
/// The value of [`FORMAT_METADATA_KEY`] for native tables.
pub const TABLE_FORMAT: &str = "arrow-table-v1";
/// Schema metadata key carrying a native table's version on a get.
pub const VERSION_METADATA_KEY: &str = "flame.cache.version";
/// Prefix of the command descriptor of a patch.
pub const PATCH_COMMAND_PREFIX: &str = "PATCH:";
/// The delete action's type.
pub const DELETE_ACTION: &str = "DELETE";
/// Row size clients use when they upload (flamepy uses 1 MiB too).
pub const PUT_CHUNK_BYTES: usize = 1 << 20;

/// The schema of a put: `{version: UInt64, data: Binary}`.
pub fn put_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("version", DataType::UInt64, false),
                Field::new("data", DataType::Binary, false),
            ]))
        })
        .clone()
}

/// The schema of a get: `{version: UInt64, kind: Utf8, data: Binary}`.
pub fn get_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("version", DataType::UInt64, false),
                Field::new("kind", DataType::Utf8, false),
                Field::new("data", DataType::Binary, false),
            ]))
        })
        .clone()
}

/// IPC options for get responses: ZSTD body compression at `level` (1 is fastest).
pub fn ipc_write_options(zstd_level: i32) -> CacheResult<IpcWriteOptions> {
    IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))
        .and_then(|o| o.try_with_compression_level(Some(zstd_level)))
        .map_err(|e| CacheError::Config(format!("zstd level {zstd_level}: {e}")))
}

/// Which part of an object a response row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RecordKind {
    /// The base value.
    Base,
    /// One patch appended after the base.
    Patch,
}

impl RecordKind {
    /// The `kind` column's text.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Base => "base",
            RecordKind::Patch => "patch",
        }
    }
}

/// A get ticket: the key and the version the client already has (0 = none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The object.
    pub key: ObjectKey,
    /// The client's version; 0 forces a full download.
    pub version: u64,
}

impl Ticket {
    /// Parses `<key>:<version>`, or a bare `<key>` (version 0, as `get_flight_info` hands out).
    pub fn parse(ticket: &[u8]) -> CacheResult<Ticket> {
        let text = std::str::from_utf8(ticket)
            .map_err(|_| CacheError::InvalidArgument("the ticket is not UTF-8".into()))?;
        let (key, version) = match text.rsplit_once(':') {
            Some((key, version)) => {
                let version = version.parse().map_err(|_| {
                    CacheError::InvalidArgument(format!(
                        "ticket {text:?}: the version after `:` is not a non-negative integer"
                    ))
                })?;
                (key, version)
            }
            None => (text, 0),
        };
        Ok(Ticket {
            key: ObjectKey::parse(key)?,
            version,
        })
    }

    /// The ticket's bytes.
    pub fn encode(&self) -> Bytes {
        Bytes::from(format!("{}:{}", self.key, self.version))
    }
}

/// What a `do_put` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutRequest {
    /// Put or overwrite (descriptor PATH).
    Put(PutTarget),
    /// Append a patch (descriptor CMD `PATCH:<key>`).
    Patch(ObjectKey),
}

impl PutRequest {
    /// Reads the descriptor of a put's first message.
    pub fn from_descriptor(descriptor: Option<&FlightDescriptor>) -> CacheResult<PutRequest> {
        let descriptor = descriptor.ok_or_else(|| {
            CacheError::InvalidArgument("the put's first message has no flight descriptor".into())
        })?;
        match DescriptorType::try_from(descriptor.r#type) {
            Ok(DescriptorType::Path) => Ok(PutRequest::Put(PutTarget::parse(
                &descriptor.path.join("/"),
            )?)),
            Ok(DescriptorType::Cmd) => {
                let cmd = std::str::from_utf8(&descriptor.cmd).map_err(|_| {
                    CacheError::InvalidArgument("the put command is not UTF-8".into())
                })?;
                let key = cmd.strip_prefix(PATCH_COMMAND_PREFIX).ok_or_else(|| {
                    CacheError::InvalidArgument(format!(
                        "unknown put command {cmd:?}: expected {PATCH_COMMAND_PREFIX}<key>"
                    ))
                })?;
                Ok(PutRequest::Patch(ObjectKey::parse(key)?))
            }
            _ => Err(CacheError::InvalidArgument(
                "the put descriptor must be a PATH or a PATCH command".into(),
            )),
        }
    }

    /// The descriptor a client sends.
    pub fn descriptor(&self) -> FlightDescriptor {
        match self {
            PutRequest::Put(PutTarget::Key(key)) => {
                FlightDescriptor::new_path(vec![key.to_string()])
            }
            PutRequest::Put(PutTarget::Prefix { app, session }) => {
                FlightDescriptor::new_path(vec![format!("{app}/{session}")])
            }
            PutRequest::Patch(key) => {
                FlightDescriptor::new_cmd(format!("{PATCH_COMMAND_PREFIX}{key}"))
            }
        }
    }
}

/// The bytes a put carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// Opaque bytes (the `data` rows, concatenated).
    Blob(Bytes),
    /// A native Arrow table, as an IPC stream (schema and batches).
    Table(Bytes),
}

impl Payload {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Payload::Blob(b) | Payload::Table(b) => b.len(),
        }
    }

    /// Whether the payload has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `schema` marks a native table.
pub fn is_table_schema(schema: &Schema) -> bool {
    schema
        .metadata()
        .get(FORMAT_METADATA_KEY)
        .map(String::as_str)
        == Some(TABLE_FORMAT)
}

/// Collects the decoded batches of one put, enforcing the size limit as they arrive.
#[derive(Debug)]
pub struct PayloadBuilder {
    what: String,
    limit: usize,
    size: usize,
    rows: Vec<Bytes>,
    table: Option<(SchemaRef, Vec<RecordBatch>)>,
}

impl PayloadBuilder {
    /// A builder for the object `what`, refusing more than `limit` bytes.
    pub fn new(what: String, limit: usize) -> Self {
        PayloadBuilder {
            what,
            limit,
            size: 0,
            rows: Vec::new(),
            table: None,
        }
    }

    fn grow(&mut self, by: usize) -> CacheResult<()> {
        self.size = self.size.saturating_add(by);
        if self.size > self.limit {
            return Err(CacheError::TooLarge {
                what: self.what.clone(),
                size: self.size,
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// Adds one batch: a table batch when the schema says so, else `data` rows.
    pub fn push(&mut self, batch: RecordBatch) -> CacheResult<()> {
        if is_table_schema(&batch.schema()) {
            self.grow(batch.get_array_memory_size())?;
            let schema = batch.schema();
            self.table
                .get_or_insert_with(|| (schema, Vec::new()))
                .1
                .push(batch);
            return Ok(());
        }
        if self.table.is_some() {
            return Err(CacheError::InvalidArgument(
                "a put mixes a native table with data rows".into(),
            ));
        }
        for row in data_rows(&batch)? {
            self.grow(row.len())?;
            self.rows.push(row);
        }
        Ok(())
    }

    /// The payload. `schema` is the stream's schema, which decides the kind of a put with no
    /// batches at all.
    pub fn finish(self, schema: Option<&SchemaRef>) -> CacheResult<Payload> {
        if let Some((schema, batches)) = self.table {
            return Ok(Payload::Table(table_to_ipc(&schema, &batches)?));
        }
        if let Some(schema) = schema.filter(|s| is_table_schema(s)) {
            return Ok(Payload::Table(table_to_ipc(schema, &[])?));
        }
        Ok(Payload::Blob(concat(self.rows)))
    }
}

/// One buffer holding `parts` in order, without copying when there is only one.
pub fn concat(mut parts: Vec<Bytes>) -> Bytes {
    match parts.len() {
        0 => Bytes::new(),
        1 => parts.pop().unwrap_or_default(),
        _ => {
            let mut out = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for part in parts {
                out.extend_from_slice(&part);
            }
            out.freeze()
        }
    }
}

/// The `data` rows of a put batch, each sliced out of the Arrow buffer without copying.
fn data_rows(batch: &RecordBatch) -> CacheResult<Vec<Bytes>> {
    let column = batch.column_by_name("data").ok_or_else(|| {
        CacheError::InvalidArgument(format!(
            "unsupported put schema {}: expected {{version: UInt64, data: Binary}} or metadata {FORMAT_METADATA_KEY}={TABLE_FORMAT}",
            batch.schema()
        ))
    })?;
    if let Some(array) = column.as_any().downcast_ref::<BinaryArray>() {
        return Ok(slices(
            array.values(),
            array.value_offsets().iter().map(|&o| o as usize),
            array,
        ));
    }
    if let Some(array) = column.as_any().downcast_ref::<LargeBinaryArray>() {
        return Ok(slices(
            array.values(),
            array.value_offsets().iter().map(|&o| o as usize),
            array,
        ));
    }
    Err(CacheError::InvalidArgument(format!(
        "the put's `data` column is {}, expected Binary",
        column.data_type()
    )))
}

/// Cuts `values` at consecutive `offsets`, skipping null rows.
fn slices(values: &Buffer, offsets: impl Iterator<Item = usize>, array: &dyn Array) -> Vec<Bytes> {
    let whole = Bytes::from(values.clone());
    let offsets: Vec<usize> = offsets.collect();
    offsets
        .windows(2)
        .enumerate()
        .filter(|(i, _)| array.is_valid(*i))
        .map(|(_, w)| whole.slice(w[0]..w[1]))
        .collect()
}

/// The batches a client sends to put `data`: rows of at most [`PUT_CHUNK_BYTES`], each
/// sliced out of `data` without copying.
pub fn put_batches(data: &Bytes) -> CacheResult<Vec<RecordBatch>> {
    let chunks: Vec<Bytes> = if data.is_empty() {
        vec![Bytes::new()]
    } else {
        (0..data.len())
            .step_by(PUT_CHUNK_BYTES)
            .map(|at| data.slice(at..(at + PUT_CHUNK_BYTES).min(data.len())))
            .collect()
    };
    chunks
        .into_iter()
        .map(|chunk| {
            let rows = [(0, RecordKind::Base, chunk)];
            let data = binary_column(&rows)?;
            let version = UInt64Array::from(vec![0_u64]);
            RecordBatch::try_new(put_schema(), vec![Arc::new(version), Arc::new(data)])
                .map_err(arrow)
        })
        .collect()
}

fn arrow(e: ArrowError) -> CacheError {
    CacheError::InvalidArgument(format!("Arrow: {e}"))
}

/// A `Binary` column of the rows' bytes; a single row reuses its buffer without copying.
fn binary_column(rows: &[(u64, RecordKind, Bytes)]) -> CacheResult<BinaryArray> {
    let data = concat(rows.iter().map(|r| r.2.clone()).collect());
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    let mut at = 0_i32;
    offsets.push(at);
    for row in rows {
        let len = i32::try_from(row.2.len())
            .map_err(|_| CacheError::InvalidArgument("a record is larger than 2 GiB".into()))?;
        at = at
            .checked_add(len)
            .ok_or_else(|| CacheError::InvalidArgument("a response is larger than 2 GiB".into()))?;
        offsets.push(at);
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    BinaryArray::try_new(offsets, Buffer::from(data), None).map_err(arrow)
}

/// One row of a get response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseRecord {
    /// The record's version.
    pub version: u64,
    /// Base or patch.
    pub kind: RecordKind,
    /// Its bytes.
    pub data: Bytes,
}

/// The get response batch for `records` (base first, then patches in version order).
pub fn response_batch(records: &[(u64, RecordKind, Bytes)]) -> CacheResult<RecordBatch> {
    let versions = UInt64Array::from(records.iter().map(|r| r.0).collect::<Vec<_>>());
    let kinds = StringArray::from(records.iter().map(|r| r.1.as_str()).collect::<Vec<_>>());
    let data = binary_column(records)?;
    RecordBatch::try_new(
        get_schema(),
        vec![Arc::new(versions), Arc::new(kinds), Arc::new(data)],
    )
    .map_err(arrow)
}

/// Reads the rows of get response batches.
pub fn decode_response(batches: &[RecordBatch]) -> CacheResult<Vec<ResponseRecord>> {
    let mut out = Vec::new();
    for batch in batches {
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                CacheError::InvalidArgument(format!("the get response has no `{name}` column"))
            })
        };
        let versions = column("version")?;
        let kinds = column("kind")?;
        let (Some(versions), Some(kinds)) = (
            versions.as_any().downcast_ref::<UInt64Array>(),
            kinds.as_any().downcast_ref::<StringArray>(),
        ) else {
            return Err(CacheError::InvalidArgument(
                "the get response has mistyped columns".into(),
            ));
        };
        let rows = data_rows(batch)?;
        for (i, data) in rows.into_iter().enumerate() {
            let kind = match kinds.value(i) {
                "base" => RecordKind::Base,
                "patch" => RecordKind::Patch,
                other => {
                    return Err(CacheError::InvalidArgument(format!(
                        "unknown record kind {other:?}"
                    )));
                }
            };
            out.push(ResponseRecord {
                version: versions.value(i),
                kind,
                data,
            });
        }
    }
    Ok(out)
}

/// Encodes a native table as an uncompressed Arrow IPC stream.
pub fn table_to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> CacheResult<Bytes> {
    let mut out = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, schema).map_err(arrow)?;
    for batch in batches {
        writer.write(batch).map_err(arrow)?;
    }
    writer.finish().map_err(arrow)?;
    drop(writer);
    Ok(Bytes::from(out))
}

/// Decodes a stored native table.
pub fn ipc_to_table(ipc: &Bytes) -> CacheResult<(SchemaRef, Vec<RecordBatch>)> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc.as_ref()), None)
        .map_err(|e| CacheError::Corrupt(format!("a stored table does not decode: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CacheError::Corrupt(format!("a stored table does not decode: {e}")))?;
    Ok((schema, batches))
}

/// A table's schema with `flame.cache.version = version` added to its metadata, and its
/// batches re-tagged with it.
pub fn table_with_version(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    version: u64,
) -> CacheResult<(SchemaRef, Vec<RecordBatch>)> {
    let mut metadata = schema.metadata().clone();
    metadata.insert(VERSION_METADATA_KEY, version.to_string());
    let schema = Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata));
    let batches = batches
        .into_iter()
        .map(|b| b.with_schema(schema.clone()).map_err(arrow))
        .collect::<CacheResult<Vec<_>>>()?;
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_carry_a_key_and_the_client_version() {
        let t = Ticket::parse(b"app/ssn/id:42").unwrap();
        assert_eq!((t.key.to_string().as_str(), t.version), ("app/ssn/id", 42));
        assert_eq!(Ticket::parse(&t.encode()).unwrap(), t);
        assert_eq!(Ticket::parse(b"app/ssn/id").unwrap().version, 0);
        assert!(
            Ticket::parse(b"app/ssn/id:x")
                .unwrap_err()
                .to_string()
                .contains("version")
        );
        assert!(Ticket::parse(b"app/../id:1").is_err());
        assert!(Ticket::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn descriptors_name_a_put_or_a_patch() {
        let put = FlightDescriptor::new_path(vec!["app/ssn".into()]);
        assert!(matches!(
            PutRequest::from_descriptor(Some(&put)).unwrap(),
            PutRequest::Put(PutTarget::Prefix { .. })
        ));
        let patch = FlightDescriptor::new_cmd("PATCH:app/ssn/id");
        assert!(matches!(
            PutRequest::from_descriptor(Some(&patch)).unwrap(),
            PutRequest::Patch(_)
        ));
        let other = FlightDescriptor::new_cmd("DROP TABLE");
        assert!(
            PutRequest::from_descriptor(Some(&other))
                .unwrap_err()
                .to_string()
                .contains("PATCH:")
        );
        assert!(PutRequest::from_descriptor(None).is_err());
        for request in [
            PutRequest::from_descriptor(Some(&put)).unwrap(),
            PutRequest::from_descriptor(Some(&patch)).unwrap(),
        ] {
            assert_eq!(
                PutRequest::from_descriptor(Some(&request.descriptor())).unwrap(),
                request
            );
        }
    }

    #[test]
    fn chunked_put_rows_are_concatenated_back_into_the_object() {
        let data = Bytes::from(
            (0..(PUT_CHUNK_BYTES * 2 + 17))
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let batches = put_batches(&data).unwrap();
        assert_eq!(batches.len(), 3);
        let mut builder = PayloadBuilder::new("x".into(), usize::MAX);
        for batch in batches {
            builder.push(batch).unwrap();
        }
        assert_eq!(builder.finish(None).unwrap(), Payload::Blob(data));
    }

    #[test]
    fn a_put_beyond_the_limit_is_too_large() {
        let data = Bytes::from(vec![1_u8; 100]);
        let mut builder = PayloadBuilder::new("object a/b/c".into(), 99);
        let err = builder
            .push(put_batches(&data).unwrap().remove(0))
            .unwrap_err();
        assert!(
            matches!(err, CacheError::TooLarge { limit: 99, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn response_rows_decode_to_what_was_encoded() {
        let records = vec![
            (3, RecordKind::Base, Bytes::from_static(b"base")),
            (4, RecordKind::Patch, Bytes::from_static(b"")),
            (5, RecordKind::Patch, Bytes::from_static(b"p2")),
        ];
        let decoded = decode_response(&[response_batch(&records).unwrap()]).unwrap();
        let back: Vec<_> = decoded
            .into_iter()
            .map(|r| (r.version, r.kind, r.data))
            .collect();
        assert_eq!(back, records);
    }

    #[test]
    fn a_native_table_round_trips_through_ipc_and_gets_its_version() {
        let mut metadata = std::collections::HashMap::new();
        metadata.insert(FORMAT_METADATA_KEY.to_owned(), TABLE_FORMAT.to_owned());
        let schema = Arc::new(Schema::new_with_metadata(
            vec![Field::new("x", DataType::UInt64, false)],
            metadata,
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(UInt64Array::from(vec![1, 2]))],
        )
        .unwrap();
        let mut builder = PayloadBuilder::new("t".into(), usize::MAX);
        builder.push(batch.clone()).unwrap();
        let Payload::Table(ipc) = builder.finish(None).unwrap() else {
            panic!("not a table");
        };
        let (stored, batches) = ipc_to_table(&ipc).unwrap();
        let (tagged, batches) = table_with_version(&stored, batches, 9).unwrap();
        assert_eq!(
            tagged
                .metadata()
                .get(VERSION_METADATA_KEY)
                .map(String::as_str),
            Some("9")
        );
        assert_eq!(batches[0].column(0).as_ref(), batch.column(0).as_ref());
    }

    #[test]
    fn a_batch_without_a_data_column_is_refused_with_the_expected_schema() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::UInt64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![1]))]).unwrap();
        let err = PayloadBuilder::new("x".into(), 10).push(batch).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected {version: UInt64, data: Binary}"),
            "{err}"
        );
    }
}
