//! Verification of Slack's request signatures (version `v0`), for the requests Slack
//! sends to slack-actions (slash commands, button presses, modal submissions).
//!
//! Slack signs `v0:{X-Slack-Request-Timestamp}:{raw body}` with HMAC-SHA256 keyed by
//! the app's signing secret and sends `v0=<hex digest>` in `X-Slack-Signature`
//! ("Verifying requests from Slack"). We recompute the MAC over the raw bytes as
//! received and compare in constant time ([`hmac::Mac::verify_slice`]), after
//! rejecting timestamps more than [`MAX_SKEW_SECONDS`] away from now in either
//! direction (a captured request cannot be replayed later; replays inside the window
//! are the caller's replay guard's job, keyed by [`Verified::signature`]).
//!
//! Errors say what was wrong with the request and never hold the secret, the
//! expected signature or the header values.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::Retryable;

/// The signature header (HTTP header names are case-insensitive; Lambda function
/// URLs pass them in lower case).
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// The timestamp header: epoch seconds when Slack sent the request.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// Slack's recommended window: five minutes, either direction.
pub const MAX_SKEW_SECONDS: i64 = 300;

const VERSION_PREFIX: &str = "v0=";
const DIGEST_LEN: usize = 32;

/// The app's signing secret (Slack app settings, Basic Information), held as the
/// keyed MAC state only. `Debug` prints `***`.
#[derive(Clone)]
pub struct SigningSecret(Hmac<Sha256>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

impl SigningSecret {
    /// The secret as stored (surrounding white space removed: a pasted secret often
    /// carries a line break). Blank is an error: a MAC keyed by nothing proves nothing.
    pub fn new(secret: &str) -> Result<SigningSecret, SignatureError> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(SignatureError::EmptySecret);
        }
        // HMAC takes keys of any length; the error arm is never taken.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
            .map_err(|_| SignatureError::EmptySecret)?;
        mac.update(b"v0:");
        Ok(SigningSecret(mac))
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.0.clone()
    }
}

/// What arrived: the two headers (absent when not sent) and the raw body, exactly as
/// Slack sent it (after base64-decoding a function URL's body, never re-encoded).
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub body: &'a [u8],
}

impl<'a> SignedRequest<'a> {
    /// Reads the two headers from `(name, value)` pairs, names compared without case.
    pub fn from_headers<I>(headers: I, body: &'a [u8]) -> SignedRequest<'a>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut timestamp = None;
        let mut signature = None;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(TIMESTAMP_HEADER) {
                timestamp = Some(value);
            } else if name.eq_ignore_ascii_case(SIGNATURE_HEADER) {
                signature = Some(value);
            }
        }
        SignedRequest {
            timestamp,
            signature,
            body,
        }
    }
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// When Slack signed it.
    pub sent_at: DateTime<Utc>,
    /// The signature, lower-case hex without `v0=`: unique per (timestamp, body),
    /// so it keys the replay guard.
    pub signature: String,
}

/// Why a request is not accepted as coming from Slack. Never retryable: the same
/// request fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Slack signing secret is empty")]
    EmptySecret,
    #[error("request has no X-Slack-Request-Timestamp header")]
    MissingTimestamp,
    #[error("request has no X-Slack-Signature header")]
    MissingSignature,
    #[error("X-Slack-Request-Timestamp is not epoch seconds")]
    BadTimestamp,
    #[error(
        "request timestamp is {skew_seconds} s from now (allowed: {MAX_SKEW_SECONDS} s either way)"
    )]
    Stale { skew_seconds: i64 },
    #[error("X-Slack-Signature is not of the form v0=<64 hex digits>")]
    BadSignatureFormat,
    #[error("X-Slack-Signature does not match the request")]
    Mismatch,
}

impl Retryable for SignatureError {
    fn retryable(&self) -> bool {
        false
    }
    fn kind(&self) -> &'static str {
        match self {
            SignatureError::EmptySecret => "BadSlackSecret",
            _ => "Unverified",
        }
    }
}

/// Checks `request` against `secret` at time `now`: headers present and well formed,
/// timestamp within [`MAX_SKEW_SECONDS`], signature equal (constant time) to
/// HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn verify(
    secret: &SigningSecret,
    request: &SignedRequest<'_>,
    now: DateTime<Utc>,
) -> Result<Verified, SignatureError> {
    let raw_timestamp = request
        .timestamp
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(SignatureError::MissingTimestamp)?;
    let raw_signature = request
        .signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(SignatureError::MissingSignature)?;
    let sent_at = parse_timestamp(raw_timestamp)?;
    let skew_seconds = (now - sent_at).num_seconds();
    if skew_seconds.abs() > MAX_SKEW_SECONDS {
        return Err(SignatureError::Stale { skew_seconds });
    }
    let digest = parse_signature(raw_signature)?;
    let mut mac = secret.mac();
    mac.update(raw_timestamp.as_bytes());
    mac.update(b":");
    mac.update(request.body);
    mac.verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(Verified {
        sent_at,
        signature: hex(&digest),
    })
}

/// The `X-Slack-Signature` value Slack would send for `body` at `timestamp` (tests,
/// the local story's fake Slack).
pub fn sign(secret: &SigningSecret, timestamp: i64, body: &[u8]) -> String {
    let mut mac = secret.mac();
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("{VERSION_PREFIX}{}", hex(&mac.finalize().into_bytes()))
}

fn parse_timestamp(raw: &str) -> Result<DateTime<Utc>, SignatureError> {
    // Digits only (no sign, no fraction): what Slack sends; and the exact text is
    // what was signed, so nothing lenient may be accepted here.
    if raw.len() > 12 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::BadTimestamp);
    }
    raw.parse::<i64>()
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or(SignatureError::BadTimestamp)
}

fn parse_signature(raw: &str) -> Result<[u8; DIGEST_LEN], SignatureError> {
    let hex_digits = raw
        .strip_prefix(VERSION_PREFIX)
        .ok_or(SignatureError::BadSignatureFormat)?;
    if hex_digits.len() != DIGEST_LEN * 2 {
        return Err(SignatureError::BadSignatureFormat);
    }
    let mut out = [0u8; DIGEST_LEN];
    for (i, pair) in hex_digits.as_bytes().chunks_exact(2).enumerate() {
        let hi = hex_value(pair[0]).ok_or(SignatureError::BadSignatureFormat)?;
        let lo = hex_value(pair[1]).ok_or(SignatureError::BadSignatureFormat)?;
        out[i] = hi << 4 | lo;
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked example of Slack's "Verifying requests from Slack" page.
    const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const DOC_TIMESTAMP: &str = "1531420618";
    const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const DOC_SIGNATURE: &str =
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn secret() -> SigningSecret {
        SigningSecret::new(DOC_SECRET).unwrap()
    }

    fn at(epoch: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(epoch, 0).unwrap()
    }

    fn doc_request<'a>(
        timestamp: Option<&'a str>,
        signature: Option<&'a str>,
    ) -> SignedRequest<'a> {
        SignedRequest {
            timestamp,
            signature,
            body: DOC_BODY.as_bytes(),
        }
    }

    const DOC_EPOCH: i64 = 1_531_420_618;

    #[test]
    fn slack_documented_example_verifies() {
        let v = verify(
            &secret(),
            &doc_request(Some(DOC_TIMESTAMP), Some(DOC_SIGNATURE)),
            at(DOC_EPOCH + 10),
        )
        .unwrap();
        assert_eq!(
            v,
            Verified {
                sent_at: at(DOC_EPOCH),
                signature: DOC_SIGNATURE[3..].to_string(),
            }
        );
    }

    #[test]
    fn sign_reproduces_slack_documented_signature() {
        assert_eq!(
            sign(&secret(), DOC_EPOCH, DOC_BODY.as_bytes()),
            DOC_SIGNATURE
        );
    }

    #[test]
    fn upper_case_hex_and_padded_headers_are_accepted() {
        let upper = format!("v0={}", DOC_SIGNATURE[3..].to_ascii_uppercase());
        let padded_ts = format!(" {DOC_TIMESTAMP} ");
        let v = verify(
            &secret(),
            &doc_request(Some(&padded_ts), Some(&upper)),
            at(DOC_EPOCH),
        )
        .unwrap();
        assert_eq!(v.signature, DOC_SIGNATURE[3..]);
    }

    #[test]
    fn a_changed_body_byte_or_signature_digit_is_a_mismatch() {
        let mut body = DOC_BODY.as_bytes().to_vec();
        body[6] ^= 1;
        let tampered = SignedRequest {
            timestamp: Some(DOC_TIMESTAMP),
            signature: Some(DOC_SIGNATURE),
            body: &body,
        };
        assert_eq!(
            verify(&secret(), &tampered, at(DOC_EPOCH)),
            Err(SignatureError::Mismatch)
        );
        let wrong = DOC_SIGNATURE.replace("a2114d57", "a2114d58");
        assert_eq!(
            verify(
                &secret(),
                &doc_request(Some(DOC_TIMESTAMP), Some(&wrong)),
                at(DOC_EPOCH)
            ),
            Err(SignatureError::Mismatch)
        );
        let other = SigningSecret::new("another-secret").unwrap();
        assert_eq!(
            verify(
                &other,
                &doc_request(Some(DOC_TIMESTAMP), Some(DOC_SIGNATURE)),
                at(DOC_EPOCH)
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_signed_timestamp_is_part_of_the_mac() {
        // Same body and signature, another timestamp inside the window: mismatch.
        let later = (DOC_EPOCH + 1).to_string();
        assert_eq!(
            verify(
                &secret(),
                &doc_request(Some(&later), Some(DOC_SIGNATURE)),
                at(DOC_EPOCH)
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_beyond_five_minutes_either_way_are_stale() {
        let req = doc_request(Some(DOC_TIMESTAMP), Some(DOC_SIGNATURE));
        assert!(verify(&secret(), &req, at(DOC_EPOCH + 300)).is_ok());
        assert!(verify(&secret(), &req, at(DOC_EPOCH - 300)).is_ok());
        assert_eq!(
            verify(&secret(), &req, at(DOC_EPOCH + 301)),
            Err(SignatureError::Stale { skew_seconds: 301 })
        );
        assert_eq!(
            verify(&secret(), &req, at(DOC_EPOCH - 301)),
            Err(SignatureError::Stale { skew_seconds: -301 })
        );
        // Years later (the documented example itself, replayed today).
        assert!(matches!(
            verify(&secret(), &req, at(1_795_600_860)),
            Err(SignatureError::Stale { .. })
        ));
    }

    #[test]
    fn missing_and_ill_formed_headers_are_named() {
        let s = secret();
        let now = at(DOC_EPOCH);
        let cases: [(Option<&str>, Option<&str>, SignatureError); 9] = [
            (None, Some(DOC_SIGNATURE), SignatureError::MissingTimestamp),
            (
                Some("  "),
                Some(DOC_SIGNATURE),
                SignatureError::MissingTimestamp,
            ),
            (Some(DOC_TIMESTAMP), None, SignatureError::MissingSignature),
            (
                Some(DOC_TIMESTAMP),
                Some(""),
                SignatureError::MissingSignature,
            ),
            (
                Some("-1531420618"),
                Some(DOC_SIGNATURE),
                SignatureError::BadTimestamp,
            ),
            (
                Some("1531420618.5"),
                Some(DOC_SIGNATURE),
                SignatureError::BadTimestamp,
            ),
            (
                Some("99999999999999"),
                Some(DOC_SIGNATURE),
                SignatureError::BadTimestamp,
            ),
            (
                Some(DOC_TIMESTAMP),
                Some(&DOC_SIGNATURE[3..]),
                SignatureError::BadSignatureFormat,
            ),
            (
                Some(DOC_TIMESTAMP),
                Some("v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"),
                SignatureError::BadSignatureFormat,
            ),
        ];
        for (ts, sig, expected) in cases {
            assert_eq!(
                verify(&s, &doc_request(ts, sig), now),
                Err(expected.clone()),
                "{ts:?} {sig:?}"
            );
        }
        for bad in [
            "v0=zz",
            "v0=",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b50g",
        ] {
            assert_eq!(
                verify(&s, &doc_request(Some(DOC_TIMESTAMP), Some(bad)), now),
                Err(SignatureError::BadSignatureFormat),
                "{bad}"
            );
        }
    }

    #[test]
    fn headers_are_found_without_case() {
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Slack-Request-Timestamp", DOC_TIMESTAMP),
            ("x-slack-signature", DOC_SIGNATURE),
        ];
        let req = SignedRequest::from_headers(headers, DOC_BODY.as_bytes());
        assert_eq!(req.timestamp, Some(DOC_TIMESTAMP));
        assert_eq!(req.signature, Some(DOC_SIGNATURE));
        assert!(verify(&secret(), &req, at(DOC_EPOCH)).is_ok());
        let none = SignedRequest::from_headers([("host", "x")], b"");
        assert_eq!((none.timestamp, none.signature), (None, None));
    }

    #[test]
    fn errors_and_debug_never_show_the_secret_or_signature() {
        assert!(matches!(
            SigningSecret::new(" \n"),
            Err(SignatureError::EmptySecret)
        ));
        let s = secret();
        assert_eq!(format!("{s:?}"), "SigningSecret(***)");
        let errors = [
            verify(
                &s,
                &doc_request(Some(DOC_TIMESTAMP), Some(DOC_SIGNATURE)),
                at(DOC_EPOCH + 3600),
            ),
            verify(
                &s,
                &doc_request(Some(DOC_TIMESTAMP), Some(&DOC_SIGNATURE.replace('a', "b"))),
                at(DOC_EPOCH),
            ),
        ];
        for e in errors {
            let e = e.unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains(DOC_SECRET) && !text.contains("a2114d57"),
                "{text}"
            );
            assert!(!e.retryable());
            assert_eq!(e.kind(), "Unverified");
        }
    }
}
