//! Small text helpers used wherever input of unknown size reaches a message, a log
//! line or an API field with a length limit.

/// The marker appended when text is cut, so a reader sees that something is missing.
pub const CUT_MARKER: &str = "…";

/// Cuts `s` to at most `max_chars` characters (not bytes: never splits a UTF-8
/// sequence), ending with [`CUT_MARKER`] when anything was removed.
pub fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_string(),
        Some(_) => {
            let keep = max_chars.saturating_sub(CUT_MARKER.chars().count());
            let end = s.char_indices().nth(keep).map_or(s.len(), |(i, _)| i);
            format!("{}{CUT_MARKER}", &s[..end])
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for console links
/// to resources whose names hold spaces, slashes or parentheses.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encode_escapes_reserved_and_unicode() {
        assert_eq!(url_encode("VPN (a)/b é"), "VPN%20%28a%29%2Fb%20%C3%A9");
        assert_eq!(url_encode("vpn-0a1B_~."), "vpn-0a1B_~.");
    }

    #[test]
    fn truncate_short_text_is_unchanged() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn truncate_long_text_ends_with_marker_within_limit() {
        let t = truncate("abcdef", 4);
        assert_eq!(t, "abc…");
        assert_eq!(t.chars().count(), 4);
    }

    #[test]
    fn truncate_counts_characters_not_bytes() {
        let t = truncate("ééééé", 3);
        assert_eq!(t, "éé…");
    }
}
