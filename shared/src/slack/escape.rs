//! Text for Slack: mrkdwn escaping, Slack's own `<...>` sequences, and cutting to a
//! limit with a visible marker.
//!
//! Slack decodes only `&amp;`, `&lt;` and `&gt;` in mrkdwn, and reads `<...>` as its
//! own syntax (links, mentions, dates). Text we did not write must therefore have
//! `&`, `<`, `>` escaped, except where it holds a link, a user or channel reference or
//! a date, which are kept as they are. Broadcast mentions in input (`<!here>`,
//! `<!channel>`, `<!everyone>`, `<!subteam^..>`) are escaped too: whom to notify is
//! decided by the mention policy of the destination, not by an alarm description.
//!
//! Lengths are measured in UTF-16 code units ([`slack_len`]): never fewer than the
//! characters, so a text within our count is within Slack's whichever way it counts
//! characters. Cutting never splits an escape sequence, a kept Slack sequence or a
//! character.

/// The marker ending text that was cut in sections and fields.
pub const CUT_MARKER: &str = " …(cut)";
/// The marker ending short text that was cut (headers, buttons, context).
pub const SHORT_CUT_MARKER: &str = "…";

/// The length Slack limits are checked against here (UTF-16 code units).
pub fn slack_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Builds mrkdwn text no longer than `max`, cutting at the first piece that does not
/// fit and ending with a marker. Pieces are escaped text characters, kept Slack
/// sequences and trusted syntax we generate (`*bold*` labels, links): each is atomic.
#[derive(Debug, Clone)]
pub struct Mrkdwn {
    out: String,
    units: usize,
    max: usize,
    marker: &'static str,
    marker_units: usize,
    /// Byte length of `out` at the last piece boundary that leaves room for the marker.
    keep: usize,
    full: bool,
}

impl Mrkdwn {
    /// An empty text that will hold at most `max` units, cut with [`CUT_MARKER`].
    pub fn new(max: usize) -> Self {
        Self::with_marker(max, CUT_MARKER)
    }

    /// An empty text with a chosen cut marker. A marker longer than `max` is
    /// replaced by [`SHORT_CUT_MARKER`].
    pub fn with_marker(max: usize, marker: &'static str) -> Self {
        let marker = if slack_len(marker) <= max {
            marker
        } else {
            SHORT_CUT_MARKER
        };
        Mrkdwn {
            out: String::new(),
            units: 0,
            max,
            marker,
            marker_units: slack_len(marker),
            keep: 0,
            full: false,
        }
    }

    /// True once something did not fit (later pushes are ignored).
    pub fn is_cut(&self) -> bool {
        self.full
    }

    /// True when nothing visible was pushed.
    pub fn is_blank(&self) -> bool {
        self.out.trim().is_empty()
    }

    fn piece(&mut self, piece: &str) -> bool {
        if self.full {
            return false;
        }
        let len = slack_len(piece);
        if self.units + len > self.max {
            self.out.truncate(self.keep);
            let trimmed = self.out.trim_end().len();
            self.out.truncate(trimmed);
            if self.max >= self.marker_units {
                let marker = if self.out.is_empty() {
                    self.marker.trim_start()
                } else {
                    self.marker
                };
                self.out.push_str(marker);
            }
            self.units = slack_len(&self.out);
            self.full = true;
            return false;
        }
        self.out.push_str(piece);
        self.units += len;
        if self.units + self.marker_units <= self.max {
            self.keep = self.out.len();
        }
        true
    }

    /// Appends text we did not write: escaped, control characters removed, Slack
    /// links, user/channel references and dates kept.
    pub fn text(&mut self, raw: &str) -> &mut Self {
        let mut rest = raw;
        while !rest.is_empty() && !self.full {
            if let Some(after) = rest.strip_prefix('<') {
                if let Some(seq) = kept_sequence(after) {
                    let consumed = seq.consumed;
                    self.piece(&seq.rendered);
                    rest = &after[consumed..];
                    continue;
                }
                self.piece("&lt;");
                rest = after;
                continue;
            }
            if let Some(entity) = ["&amp;", "&lt;", "&gt;"]
                .into_iter()
                .find(|e| rest.starts_with(e))
            {
                // Already escaped (e.g. text that passed through Slack once): keep, so
                // escaping twice shows the same thing as escaping once.
                self.piece(entity);
                rest = &rest[entity.len()..];
                continue;
            }
            let Some(c) = rest.chars().next() else { break };
            rest = &rest[c.len_utf8()..];
            match c {
                '&' => self.piece("&amp;"),
                '>' => self.piece("&gt;"),
                '\n' | '\t' => self.piece(if c == '\n' { "\n" } else { " " }),
                c if c.is_control() => true,
                c => {
                    let mut buf = [0u8; 4];
                    self.piece(c.encode_utf8(&mut buf))
                }
            };
        }
        self
    }

    /// Appends text on one line: like [`Mrkdwn::text`] with line breaks as spaces.
    pub fn line(&mut self, raw: &str) -> &mut Self {
        if raw.contains(['\n', '\r']) {
            let one_line = raw.replace(['\n', '\r'], " ");
            self.text(&one_line)
        } else {
            self.text(raw)
        }
    }

    /// Appends syntax we generate (`*Label:* `, `\n`, `` ` ``): trusted, atomic.
    pub fn syntax(&mut self, trusted: &str) -> &mut Self {
        self.piece(trusted);
        self
    }

    /// Appends a link `<url|label>`; the label is escaped and cut to 200 units, the
    /// URL made safe for the sequence. Atomic: a link is shown whole or not at all.
    pub fn link(&mut self, url: &str, label: &str) -> &mut Self {
        let link = link(url, label);
        self.piece(&link);
        self
    }

    /// The text, cut if needed.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes `raw` for mrkdwn and cuts it to `max` units with [`CUT_MARKER`].
pub fn escape_cut(raw: &str, max: usize) -> String {
    let mut m = Mrkdwn::new(max);
    m.text(raw);
    m.finish()
}

/// Escapes all of `raw` for mrkdwn (no limit).
pub fn escape(raw: &str) -> String {
    escape_cut(raw, usize::MAX)
}

/// Plain text (headers, button labels): control characters and line breaks become
/// spaces, then it is cut to `max` units with [`SHORT_CUT_MARKER`].
pub fn plain_cut(raw: &str, max: usize) -> String {
    let marker_units = slack_len(SHORT_CUT_MARKER);
    let mut out = String::new();
    let mut units = 0;
    let mut keep = 0;
    for c in raw.chars() {
        let c = if c.is_control() { ' ' } else { c };
        let len = c.len_utf16();
        if units + len > max {
            out.truncate(keep);
            if max >= marker_units {
                out.push_str(SHORT_CUT_MARKER);
            }
            return out;
        }
        out.push(c);
        units += len;
        if units + marker_units <= max {
            keep = out.len();
        }
    }
    out
}

/// A mrkdwn link `<url|label>` with the label escaped (and cut to 200 units) and the
/// characters that would end the sequence early percent-encoded in the URL.
pub fn link(url: &str, label: &str) -> String {
    let mut safe_url = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            '|' => safe_url.push_str("%7C"),
            '<' => safe_url.push_str("%3C"),
            '>' => safe_url.push_str("%3E"),
            ' ' => safe_url.push_str("%20"),
            c if c.is_control() => {}
            c => safe_url.push(c),
        }
    }
    let mut l = Mrkdwn::with_marker(200, SHORT_CUT_MARKER);
    l.line(label);
    let label = l.finish();
    if label.trim().is_empty() {
        format!("<{safe_url}>")
    } else {
        format!("<{safe_url}|{label}>")
    }
}

struct Kept {
    rendered: String,
    /// Bytes of the input after `<`, through the closing `>`.
    consumed: usize,
}

/// Recognizes a Slack sequence we keep, given the text after `<`.
fn kept_sequence(after: &str) -> Option<Kept> {
    // A sequence ends at the first `>`, holds no `<` or line break, and is short;
    // anything else is text to escape.
    let end = after
        .char_indices()
        .take(3000)
        .find_map(|(i, c)| match c {
            '>' => Some(Some(i)),
            '<' | '\n' | '\r' => Some(None),
            _ => None,
        })??;
    let inner = &after[..end];
    if inner.contains(char::is_control) {
        return None;
    }
    let (target, label) = match inner.split_once('|') {
        Some((t, l)) => (t, Some(l)),
        None => (inner, None),
    };
    let keep = is_link_target(target)
        || is_reference(target, '@', &['U', 'W', 'B'])
        || is_reference(target, '#', &['C', 'G', 'D'])
        || is_date(target);
    if !keep {
        return None;
    }
    let mut rendered = String::with_capacity(inner.len() + 2);
    rendered.push('<');
    rendered.push_str(target);
    if let Some(label) = label {
        rendered.push('|');
        // The label is text: escape `&` (a `<` cannot occur, `>` ends the sequence).
        rendered.push_str(&escape(label));
    }
    rendered.push('>');
    Some(Kept {
        rendered,
        consumed: end + 1,
    })
}

fn is_link_target(t: &str) -> bool {
    let rest = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .or_else(|| t.strip_prefix("mailto:"));
    matches!(rest, Some(r) if !r.is_empty() && !r.contains(char::is_whitespace))
}

fn is_reference(t: &str, sigil: char, kinds: &[char]) -> bool {
    let Some(id) = t.strip_prefix(sigil) else {
        return false;
    };
    let mut chars = id.chars();
    matches!(chars.next(), Some(k) if kinds.contains(&k))
        && id.len() >= 3
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn is_date(t: &str) -> bool {
    let Some(rest) = t.strip_prefix("!date^") else {
        return false;
    };
    let mut parts = rest.splitn(3, '^');
    let epoch = parts.next().unwrap_or_default();
    let format = parts.next();
    !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_digit()) && format.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_special_characters() {
        assert_eq!(escape("a & b < c > d"), "a &amp; b &lt; c &gt; d");
    }

    #[test]
    fn escape_keeps_links_users_channels_and_dates() {
        let s = "see <https://example.com/a?b=1&c=2|the page> by <@U012AB3CD> in <#C123ABC> at <!date^1392734382^{date}|Feb 18>";
        assert_eq!(
            escape(s),
            "see <https://example.com/a?b=1&c=2|the page> by <@U012AB3CD> in <#C123ABC> at <!date^1392734382^{date}|Feb 18>"
        );
    }

    #[test]
    fn escape_neutralizes_broadcast_mentions_from_input() {
        assert_eq!(
            escape("<!here> <!channel> <!subteam^S123>"),
            "&lt;!here&gt; &lt;!channel&gt; &lt;!subteam^S123&gt;"
        );
    }

    #[test]
    fn escape_treats_unclosed_or_foreign_angle_brackets_as_text() {
        assert_eq!(escape("x <y <https://a.b|c>"), "x &lt;y <https://a.b|c>");
        assert_eq!(
            escape("<javascript:alert(1)>"),
            "&lt;javascript:alert(1)&gt;"
        );
        assert_eq!(escape("<@lowercase>"), "&lt;@lowercase&gt;");
    }

    #[test]
    fn escape_is_idempotent_and_escapes_label_ampersand() {
        let once = escape("AT&T <https://x.y|R&D> 1<2");
        assert_eq!(once, "AT&amp;T <https://x.y|R&amp;D> 1&lt;2");
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn escape_drops_control_characters_but_keeps_line_breaks() {
        assert_eq!(escape("a\u{0}b\u{7}\nc\td"), "ab\nc d");
    }

    #[test]
    fn cut_never_splits_an_escape_and_ends_with_marker() {
        // "&amp;" is 5 units: it must not be split at any limit.
        for max in 0..20 {
            let s = escape_cut("ab&&&&&&&&&", max);
            assert!(slack_len(&s) <= max, "max {max}: {s}");
            let without_marker = s
                .trim_end_matches(CUT_MARKER)
                .trim_end_matches(SHORT_CUT_MARKER);
            assert!(
                without_marker.matches('&').count() == without_marker.matches("&amp;").count(),
                "split entity at {max}: {s}"
            );
        }
        assert_eq!(escape_cut("hello & goodbye", 13), "hello …(cut)");
    }

    #[test]
    fn cut_keeps_a_link_whole_or_drops_it() {
        let s = escape_cut("x <https://example.com/long/path|label>", 20);
        assert_eq!(s, "x …(cut)");
    }

    #[test]
    fn cut_counts_utf16_units() {
        // Each emoji is 2 UTF-16 units.
        let s = escape_cut(&"🔴".repeat(10), 10);
        assert!(slack_len(&s) <= 10);
        assert_eq!(s, "🔴 …(cut)");
        assert_eq!(slack_len("é🔴"), 3);
    }

    #[test]
    fn plain_cut_flattens_lines_and_cuts_with_short_marker() {
        assert_eq!(plain_cut("a\nb", 10), "a b");
        assert_eq!(plain_cut("abcdef", 4), "abc…");
        assert_eq!(plain_cut("abcd", 4), "abcd");
    }

    #[test]
    fn link_makes_url_safe_and_escapes_label() {
        assert_eq!(
            link("https://x.y/a|b c>", "A<B"),
            "<https://x.y/a%7Cb%20c%3E|A&lt;B>"
        );
        assert_eq!(link("https://x.y", ""), "<https://x.y>");
    }

    #[test]
    fn mrkdwn_syntax_is_atomic() {
        let mut m = Mrkdwn::new(20);
        m.syntax("*Alarm:* ").text("very long alarm name");
        assert!(m.is_cut());
        assert_eq!(m.finish(), "*Alarm:* very …(cut)");
        // Too small for the syntax and the marker: only the marker remains.
        let mut m = Mrkdwn::new(12);
        m.syntax("*Alarm:* ").text("very long");
        assert_eq!(m.finish(), "…(cut)");
    }
}
