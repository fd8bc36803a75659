//! Plugin administration messages: upload a WebAssembly module under a name, list what
//! is registered and attached, attach a plugin to a topic's produce or fetch stage, and
//! detach it. The module format and the guest contract are in `plugins/ABI.md`.
//!
//! Layouts as in [`crate::message`]: strings `[length:2][utf8]`, arrays
//! `[count:4][elements]`, byte fields `[length:4][bytes]`, integers big-endian.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::codec::{DecodeError, Reader, WriteExt, take_bytes};
use crate::message::{Empty, ResponseBody, Rpc};
use crate::topic::validate_topic_name;

/// The longest plugin name.
pub const PLUGIN_NAME_BYTES_MAX: usize = 128;
/// The largest module an upload may carry on the wire. The broker's own limit
/// (`plugin_module_bytes_max`, 8 MiB by default) is usually smaller.
pub const PLUGIN_MODULE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Parameters one attachment or fetch may pass to a plugin's `init`.
pub const PLUGIN_PARAMS_MAX: usize = 64;
/// Longest parameter key or value.
pub const PLUGIN_PARAM_BYTES_MAX: usize = 4096;
/// Plugins attached to one topic, over both stages.
pub const ATTACHMENTS_PER_TOPIC_MAX: usize = 16;
/// Plugins one broker keeps registered.
pub const PLUGINS_MAX: usize = 1_000;

/// Why a plugin name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginNameError {
    #[error("plugin name is empty")]
    Empty,
    #[error("plugin name is {0} bytes, longer than {PLUGIN_NAME_BYTES_MAX}")]
    TooLong(usize),
    #[error("plugin name contains `{0}`: use only ASCII letters, digits, '.', '_' and '-'")]
    BadCharacter(char),
}

/// Checks a plugin name: 1 to 128 of `[A-Za-z0-9._-]`.
pub fn validate_plugin_name(name: &str) -> Result<(), PluginNameError> {
    if name.is_empty() {
        return Err(PluginNameError::Empty);
    }
    if name.len() > PLUGIN_NAME_BYTES_MAX {
        return Err(PluginNameError::TooLong(name.len()));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(PluginNameError::BadCharacter(c)),
        None => Ok(()),
    }
}

/// Checks parameters against the count and length limits.
pub fn validate_params(params: &[(String, String)]) -> Result<(), String> {
    if params.len() > PLUGIN_PARAMS_MAX {
        return Err(format!(
            "{} plugin parameters, more than {PLUGIN_PARAMS_MAX}",
            params.len()
        ));
    }
    for (k, v) in params {
        if k.is_empty() {
            return Err("a plugin parameter has an empty key".into());
        }
        if k.len() > PLUGIN_PARAM_BYTES_MAX || v.len() > PLUGIN_PARAM_BYTES_MAX {
            return Err(format!(
                "plugin parameter `{}` is longer than {PLUGIN_PARAM_BYTES_MAX} bytes",
                k.chars().take(32).collect::<String>()
            ));
        }
    }
    Ok(())
}

/// Where on a topic's path a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginStage {
    /// Before append: what is stored changes.
    Produce,
    /// Per fetch: stored data stays as it was; survivors keep their offsets.
    Fetch,
}

impl PluginStage {
    pub const fn name(self) -> &'static str {
        match self {
            PluginStage::Produce => "produce",
            PluginStage::Fetch => "fetch",
        }
    }

    const fn code(self) -> u8 {
        match self {
            PluginStage::Produce => 1,
            PluginStage::Fetch => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            1 => Ok(PluginStage::Produce),
            2 => Ok(PluginStage::Fetch),
            other => Err(DecodeError::InvalidValue {
                what: "stage",
                value: other.into(),
            }),
        }
    }
}

impl fmt::Display for PluginStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PluginStage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "produce" => Ok(PluginStage::Produce),
            "fetch" => Ok(PluginStage::Fetch),
            other => Err(format!("unknown stage `{other}`: use produce or fetch")),
        }
    }
}

/// What happens to a batch when a plugin fails on it (trap, timeout, out of memory,
/// malformed answer, or an error the plugin reports).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum OnError {
    /// The request fails with `PLUGIN_FAILED`: a produce stores nothing, a fetch gets
    /// the error.
    #[default]
    Fail,
    /// The batch is dropped (counted in `quiver_plugin_batches_skipped_total`).
    Skip,
    /// The batch goes on as if this plugin were not attached.
    Pass,
    /// The batch's records go to the named topic, with headers naming the plugin and
    /// the reason, and the stream goes on without them.
    DeadLetter(String),
}

impl fmt::Display for OnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnError::Fail => f.write_str("fail"),
            OnError::Skip => f.write_str("skip"),
            OnError::Pass => f.write_str("pass"),
            OnError::DeadLetter(topic) => write!(f, "dead-letter:{topic}"),
        }
    }
}

impl FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail" => Ok(OnError::Fail),
            "skip" => Ok(OnError::Skip),
            "pass" => Ok(OnError::Pass),
            other => match other.strip_prefix("dead-letter:") {
                Some(topic) => {
                    validate_topic_name(topic).map_err(|e| format!("dead-letter topic: {e}"))?;
                    Ok(OnError::DeadLetter(topic.to_owned()))
                }
                None => Err(format!(
                    "unknown on-error policy `{other}`: use fail, skip, pass or dead-letter:TOPIC"
                )),
            },
        }
    }
}

/// Headers a dead-lettered record carries, besides its own.
pub mod dead_letter_header {
    /// The plugin that failed.
    pub const PLUGIN: &str = "quiver.plugin";
    /// Its version (content hash).
    pub const VERSION: &str = "quiver.plugin.version";
    /// Why it failed, as text.
    pub const ERROR: &str = "quiver.plugin.error";
    /// The stage it failed at: `produce` or `fetch`.
    pub const STAGE: &str = "quiver.plugin.stage";
    /// The topic and partition the record came from.
    pub const SOURCE_TOPIC: &str = "quiver.source.topic";
    pub const SOURCE_PARTITION: &str = "quiver.source.partition";
    /// The record's offset in the source (fetch stage only: at the produce stage the
    /// record was never stored there).
    pub const SOURCE_OFFSET: &str = "quiver.source.offset";
}

pub(crate) fn put_params(buf: &mut BytesMut, params: &[(String, String)]) {
    buf.put_array_len(params.len());
    for (k, v) in params {
        buf.put_string(k);
        buf.put_string(v);
    }
}

pub(crate) fn read_params(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, DecodeError> {
    let n = r.array_len("params", PLUGIN_PARAMS_MAX, 4)?;
    (0..n)
        .map(|_| Ok((r.string("param key")?, r.string("param value")?)))
        .collect()
}

/// A registered plugin named for one fetch, with the parameters its `init` gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginCall {
    pub name: String,
    pub params: Vec<(String, String)>,
}

/// `[name:string][module:bytes]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginUploadRequest {
    pub name: String,
    /// The WebAssembly module, binary format.
    pub module: Bytes,
}

impl Rpc for PluginUploadRequest {
    const API: ApiKey = ApiKey::PluginUpload;
    type Response = PluginInfo;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.name);
        buf.put_u32(self.module.len() as u32);
        buf.put_slice(&self.module);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut body = body.freeze();
        let mut r = Reader::new(&body);
        let name = r.string("name")?;
        let consumed = r.consumed();
        bytes::Buf::advance(&mut body, consumed);
        let module = take_bytes(&mut body, "module", PLUGIN_MODULE_BYTES_MAX)?;
        Reader::new(&body).finish()?;
        Ok(Self { name, module })
    }
}

/// Asks a broker for the module of one plugin version (its content hash):
/// `[version:string]`. Brokers of a cluster use it to fetch a version the controller
/// registered from the broker that took the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginModuleRequest {
    pub version: String,
}

impl Rpc for PluginModuleRequest {
    const API: ApiKey = ApiKey::PluginModule;
    type Response = PluginModuleResponse;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.version);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let version = r.string("version")?;
        r.finish()?;
        Ok(Self { version })
    }
}

/// The module's bytes: `[module:bytes]`. The receiver checks them against the
/// version's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginModuleResponse {
    pub module: Bytes,
}

impl ResponseBody for PluginModuleResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(self.module.len() as u32);
        buf.put_slice(&self.module);
    }

    fn decode_body(mut body: Bytes) -> Result<Self, DecodeError> {
        let module = take_bytes(&mut body, "module", PLUGIN_MODULE_BYTES_MAX)?;
        Reader::new(&body).finish()?;
        Ok(Self { module })
    }
}

/// One registered plugin: `[name:string][version:string][kind:string][size:8][uploaded_ms:8]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    /// The content hash of the module (hex), which names this version.
    pub version: String,
    /// `filter`, `map`, `filter_map` or `array_map`.
    pub kind: String,
    pub size: u64,
    /// When this version was uploaded, milliseconds since the Unix epoch.
    pub uploaded_ms: i64,
}

impl PluginInfo {
    fn put(&self, buf: &mut BytesMut) {
        buf.put_string(&self.name);
        buf.put_string(&self.version);
        buf.put_string(&self.kind);
        buf.put_u64(self.size);
        buf.put_i64(self.uploaded_ms);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            name: r.string("name")?,
            version: r.string("version")?,
            kind: r.string("kind")?,
            size: r.u64("size")?,
            uploaded_ms: r.i64("uploaded_ms")?,
        })
    }
}

impl ResponseBody for PluginInfo {
    fn encode_body(&self, buf: &mut BytesMut) {
        self.put(buf);
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self::read(&mut r)?;
        r.finish()?;
        Ok(out)
    }
}

/// One plugin attached to one topic:
/// `[topic:string][plugin:string][stage:1][params][on_error:string]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub topic: String,
    pub plugin: String,
    pub stage: PluginStage,
    pub params: Vec<(String, String)>,
    pub on_error: OnError,
}

impl Attachment {
    fn put(&self, buf: &mut BytesMut) {
        buf.put_string(&self.topic);
        buf.put_string(&self.plugin);
        buf.put_u8(self.stage.code());
        put_params(buf, &self.params);
        buf.put_string(&self.on_error.to_string());
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let topic = r.string("topic")?;
        let plugin = r.string("plugin")?;
        let stage = PluginStage::from_code(r.u8("stage")?)?;
        let params = read_params(r)?;
        let on_error = r
            .string("on_error")?
            .parse()
            .map_err(|_| DecodeError::InvalidValue {
                what: "on_error",
                value: 0,
            })?;
        Ok(Self {
            topic,
            plugin,
            stage,
            params,
            on_error,
        })
    }
}

/// Asks for every registered plugin and every attachment. Empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PluginListRequest;

impl Rpc for PluginListRequest {
    const API: ApiKey = ApiKey::PluginList;
    type Response = PluginListResponse;
    fn encode_body(&self, _buf: &mut BytesMut) {}
    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Reader::new(&body).finish()?;
        Ok(PluginListRequest)
    }
}

/// `[plugins:array<PluginInfo>][attachments:array<Attachment>]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginListResponse {
    pub plugins: Vec<PluginInfo>,
    pub attachments: Vec<Attachment>,
}

impl ResponseBody for PluginListResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_array_len(self.plugins.len());
        for p in &self.plugins {
            p.put(buf);
        }
        buf.put_array_len(self.attachments.len());
        for a in &self.attachments {
            a.put(buf);
        }
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let n = r.array_len("plugins", PLUGINS_MAX, 22)?;
        let plugins = (0..n)
            .map(|_| PluginInfo::read(&mut r))
            .collect::<Result<_, _>>()?;
        let n = r.array_len("attachments", 100_000, 13)?;
        let attachments = (0..n)
            .map(|_| Attachment::read(&mut r))
            .collect::<Result<_, _>>()?;
        r.finish()?;
        Ok(Self {
            plugins,
            attachments,
        })
    }
}

/// Attaches a registered plugin to a topic; it runs after the topic's existing
/// attachments of the same stage. Body: one [`Attachment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginAttachRequest {
    pub attachment: Attachment,
}

impl Rpc for PluginAttachRequest {
    const API: ApiKey = ApiKey::PluginAttach;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        self.attachment.put(buf);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let attachment = Attachment::read(&mut r)?;
        r.finish()?;
        Ok(Self { attachment })
    }
}

/// Removes every attachment of `plugin` from `topic`: `[topic:string][plugin:string]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDetachRequest {
    pub topic: String,
    pub plugin: String,
}

impl Rpc for PluginDetachRequest {
    const API: ApiKey = ApiKey::PluginDetach;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.topic);
        buf.put_string(&self.plugin);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            topic: r.string("topic")?,
            plugin: r.string("plugin")?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// Deletes a plugin that no topic has attached: `[name:string]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDeleteRequest {
    pub name: String,
}

impl Rpc for PluginDeleteRequest {
    const API: ApiKey = ApiKey::PluginDelete;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.name);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let out = Self {
            name: r.string("name")?,
        };
        r.finish()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<R: Rpc + PartialEq + fmt::Debug>(request: R) {
        let frame = request.encode_frame();
        let parsed = crate::frame::RequestFrame::parse(BytesMut::from(
            &frame[crate::frame::FRAME_LENGTH_BYTES..],
        ))
        .expect("head");
        assert_eq!(parsed.api_key, R::API.code());
        assert_eq!(R::decode_body(parsed.body).expect("decodes"), request);
    }

    fn attachment() -> Attachment {
        Attachment {
            topic: "orders".into(),
            plugin: "only-eu".into(),
            stage: PluginStage::Fetch,
            params: vec![
                ("field".into(), "region".into()),
                ("value".into(), "eu".into()),
            ],
            on_error: OnError::DeadLetter("orders-dlq".into()),
        }
    }

    #[test]
    fn requests_round_trip() {
        round_trip(PluginUploadRequest {
            name: "only-eu".into(),
            module: Bytes::from_static(b"\0asm\x01\0\0\0"),
        });
        round_trip(PluginAttachRequest {
            attachment: attachment(),
        });
        round_trip(PluginDeleteRequest {
            name: "filter".into(),
        });
        round_trip(PluginDetachRequest {
            topic: "orders".into(),
            plugin: "only-eu".into(),
        });
        round_trip(PluginModuleRequest {
            version: "ab12".into(),
        });
    }

    #[test]
    fn list_response_round_trips() {
        let response = PluginListResponse {
            plugins: vec![PluginInfo {
                name: "only-eu".into(),
                version: "ab12".into(),
                kind: "filter".into(),
                size: 1234,
                uploaded_ms: 1_700_000_000_000,
            }],
            attachments: vec![attachment()],
        };
        let mut buf = BytesMut::new();
        response.encode_body(&mut buf);
        assert_eq!(
            PluginListResponse::decode_body(buf.freeze()).expect("decodes"),
            response
        );
    }

    #[test]
    fn on_error_parses_and_prints() {
        for text in ["fail", "skip", "pass", "dead-letter:orders-dlq"] {
            let policy: OnError = text.parse().expect("parses");
            assert_eq!(policy.to_string(), text);
        }
        assert!("dead-letter:".parse::<OnError>().is_err());
        assert!("dead-letter:__internal".parse::<OnError>().is_err());
        assert!("drop".parse::<OnError>().is_err());
    }

    #[test]
    fn names_and_params_are_checked() {
        assert!(validate_plugin_name("json-filter_v2.1").is_ok());
        assert_eq!(validate_plugin_name(""), Err(PluginNameError::Empty));
        assert_eq!(
            validate_plugin_name("a/b"),
            Err(PluginNameError::BadCharacter('/'))
        );
        assert!(validate_plugin_name(&"x".repeat(129)).is_err());
        assert!(validate_params(&[("".into(), "v".into())]).is_err());
        let many: Vec<(String, String)> = (0..65).map(|i| (i.to_string(), String::new())).collect();
        assert!(validate_params(&many).is_err());
    }

    #[test]
    fn a_module_longer_than_its_body_is_refused() {
        let mut body = BytesMut::new();
        body.put_string("p");
        body.put_u32(100);
        body.put_slice(b"short");
        assert!(PluginUploadRequest::decode_body(body).is_err());
    }
}
