//! Client quotas per principal (Kafka's): produce and fetch bytes per second and a
//! share of request-handling time. A principal over its quota is throttled: its
//! answers are held back until its rate is back within the quota.
//!
//! Layouts as in [`crate::message`]; an absent limit is written as `u64::MAX`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::api::ApiKey;
use crate::codec::{DecodeError, Reader, WriteExt};
use crate::message::{Empty, ResponseBody, Rpc};

/// Principals with quotas of their own, plus the default (`User:*`).
pub const QUOTAS_MAX: usize = 10_000;
/// The principal whose quota applies to every principal without one of its own.
pub const DEFAULT_QUOTA_PRINCIPAL: &str = "User:*";

const NONE: u64 = u64::MAX;

/// One principal's limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    pub produce_bytes_per_sec: Option<u64>,
    pub fetch_bytes_per_sec: Option<u64>,
    /// Percent of one core's time spent handling the principal's requests.
    pub request_percent: Option<u64>,
}

impl Quota {
    /// Whether no limit is set (setting such a quota removes the principal's).
    pub fn is_unlimited(&self) -> bool {
        *self == Quota::default()
    }

    fn put(&self, buf: &mut BytesMut) {
        for limit in [
            self.produce_bytes_per_sec,
            self.fetch_bytes_per_sec,
            self.request_percent,
        ] {
            buf.put_u64(limit.unwrap_or(NONE));
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut limit = |what| r.u64(what).map(|v| (v != NONE).then_some(v));
        Ok(Self {
            produce_bytes_per_sec: limit("produce_bytes_per_sec")?,
            fetch_bytes_per_sec: limit("fetch_bytes_per_sec")?,
            request_percent: limit("request_percent")?,
        })
    }
}

/// Sets (or, with every limit absent, removes) a principal's quota:
/// `[principal:string][produce_bytes_per_sec:8][fetch_bytes_per_sec:8][request_percent:8]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSetRequest {
    pub principal: String,
    pub quota: Quota,
}

impl Rpc for QuotaSetRequest {
    const API: ApiKey = ApiKey::QuotaSet;
    type Response = Empty;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_string(&self.principal);
        self.quota.put(buf);
    }

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let principal = r.string("principal")?;
        let quota = Quota::read(&mut r)?;
        r.finish()?;
        Ok(Self { principal, quota })
    }
}

/// Lists every quota. Empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaListRequest;

impl Rpc for QuotaListRequest {
    const API: ApiKey = ApiKey::QuotaList;
    type Response = QuotaListResponse;

    fn encode_body(&self, _buf: &mut BytesMut) {}

    fn decode_body(body: BytesMut) -> Result<Self, DecodeError> {
        Reader::new(&body).finish()?;
        Ok(QuotaListRequest)
    }
}

/// `[quotas:array<[principal:string][limits:24]>]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuotaListResponse {
    pub quotas: Vec<(String, Quota)>,
}

impl ResponseBody for QuotaListResponse {
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_array_len(self.quotas.len());
        for (principal, quota) in &self.quotas {
            buf.put_string(principal);
            quota.put(buf);
        }
    }

    fn decode_body(body: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let n = r.array_len("quotas", QUOTAS_MAX, 26)?;
        let quotas = (0..n)
            .map(|_| Ok((r.string("principal")?, Quota::read(&mut r)?)))
            .collect::<Result<_, DecodeError>>()?;
        r.finish()?;
        Ok(Self { quotas })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_round_trip_with_absent_limits() {
        let set = QuotaSetRequest {
            principal: "User:batch".into(),
            quota: Quota {
                produce_bytes_per_sec: Some(1 << 20),
                fetch_bytes_per_sec: None,
                request_percent: Some(25),
            },
        };
        let mut buf = BytesMut::new();
        set.encode_body(&mut buf);
        assert_eq!(QuotaSetRequest::decode_body(buf).expect("decodes"), set);
        let list = QuotaListResponse {
            quotas: vec![("User:*".into(), Quota::default())],
        };
        let mut buf = BytesMut::new();
        list.encode_body(&mut buf);
        assert_eq!(
            QuotaListResponse::decode_body(buf.freeze()).expect("decodes"),
            list
        );
        assert!(Quota::default().is_unlimited());
    }
}
