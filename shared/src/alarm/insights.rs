//! Reading a CloudWatch Metrics Insights query, as far as classification needs it.
//!
//! A Metrics Insights alarm carries only its SQL (`SELECT MIN(TunnelState) FROM
//! "AWS/VPN" GROUP BY VpnId`). Rules match namespaces, metric names, statistics and
//! dimensions, so the query's metric, function, equality filters and `GROUP BY` keys
//! are read here. The grammar (CloudWatch "Metrics Insights query components and
//! syntax"):
//!
//! ```text
//! SELECT FUNCTION(metricName) FROM namespace | SCHEMA(namespace [, labelKey ...])
//! [ WHERE labelKey OPERATOR labelValue [AND ...] ] [ GROUP BY labelKey [, ...] ]
//! [ ORDER BY FUNCTION() [DESC | ASC] ] [ LIMIT number ]
//! ```
//!
//! Keywords are case-insensitive; identifiers are case-sensitive and may be written
//! in double quotes; label values are in single quotes. A query this reader cannot
//! follow is not an error: the alarm keeps its SQL text and simply has no parsed
//! metric, so only name-based rules match it.

use std::collections::BTreeMap;

/// What a Metrics Insights query reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InsightsQuery {
    pub namespace: String,
    pub metric: String,
    /// The CloudWatch statistic of the query's function: `MIN` is `Minimum`, `AVG`
    /// `Average`, `COUNT` `SampleCount`.
    pub statistic: String,
    /// `labelKey = 'value'` terms of the `WHERE` clause (the clause joins terms with
    /// AND only); other operators narrow the query without naming one value and are
    /// left out.
    pub filters: BTreeMap<String, String>,
    /// `GROUP BY` keys: with any, the query returns one time series per group.
    pub group_by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A keyword or bare identifier (`SELECT`, `TunnelState`, `AWS/EC2` is quoted).
    Word(String),
    /// A double-quoted identifier.
    Quoted(String),
    /// A single-quoted label value.
    Literal(String),
    Number(String),
    Punct(char),
    /// `=`, `!=`, `<>`, `<`, `>`, `<=`, `>=`.
    Op(String),
}

fn tokens(sql: &str) -> Option<Vec<Token>> {
    let mut out = vec![];
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next()? {
                    // A doubled quote or a backslash escapes the quote character.
                    q if q == c && chars.peek() == Some(&c) => {
                        chars.next();
                        s.push(c);
                    }
                    q if q == c => break,
                    '\\' => s.push(chars.next()?),
                    other => s.push(other),
                }
            }
            out.push(if c == '"' {
                Token::Quoted(s)
            } else {
                Token::Literal(s)
            });
        } else if c == '(' || c == ')' || c == ',' {
            chars.next();
            out.push(Token::Punct(c));
        } else if matches!(c, '=' | '!' | '<' | '>') {
            chars.next();
            let mut op = c.to_string();
            if let Some(&n) = chars.peek() {
                if matches!(n, '=' | '>') {
                    op.push(n);
                    chars.next();
                }
            }
            out.push(Token::Op(op));
        } else if c.is_ascii_digit() {
            let mut s = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() || d == '.' {
                    s.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Number(s));
        } else {
            let mut s = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_whitespace()
                    || matches!(d, '(' | ')' | ',' | '"' | '\'' | '=' | '!' | '<' | '>')
                {
                    break;
                }
                s.push(d);
                chars.next();
            }
            out.push(Token::Word(s));
        }
    }
    Some(out)
}

struct Cursor {
    tokens: Vec<Token>,
    at: usize,
}

impl Cursor {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&mut self, kw: &str) -> bool {
        match self.peek() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn punct(&mut self, p: char) -> bool {
        if self.peek() == Some(&Token::Punct(p)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// An identifier, bare or double-quoted.
    fn ident(&mut self) -> Option<String> {
        match self.next()? {
            Token::Word(w) | Token::Quoted(w) if !w.is_empty() => Some(w),
            _ => None,
        }
    }

    fn at_clause(&self) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if ["WHERE", "GROUP", "ORDER", "LIMIT"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k)))
    }
}

fn statistic(function: &str) -> Option<&'static str> {
    Some(match function.to_ascii_uppercase().as_str() {
        "MIN" => "Minimum",
        "MAX" => "Maximum",
        "AVG" => "Average",
        "SUM" => "Sum",
        "COUNT" => "SampleCount",
        _ => return None,
    })
}

/// True when `expression` is a Metrics Insights query rather than metric math.
pub fn is_insights_query(expression: &str) -> bool {
    let e = expression.trim_start();
    e.get(..6)
        .is_some_and(|head| head.eq_ignore_ascii_case("SELECT"))
        && e[6..].starts_with(char::is_whitespace)
}

/// The `GROUP BY` keys of a query, also when the rest of it is beyond [`parse_query`]
/// (whether an alarm has one time series per group must not depend on reading all of
/// its SQL).
pub fn group_by_keys(sql: &str) -> Vec<String> {
    if let Some(q) = parse_query(sql) {
        return q.group_by;
    }
    let Some(tokens) = (sql.len() <= 10_000).then(|| tokens(sql)).flatten() else {
        return vec![];
    };
    let is_word = |t: Option<&Token>, kw: &str| matches!(t, Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw));
    let Some(at) = (0..tokens.len())
        .find(|&i| is_word(tokens.get(i), "GROUP") && is_word(tokens.get(i + 1), "BY"))
    else {
        return vec![];
    };
    let mut c = Cursor {
        tokens: tokens[at + 2..].to_vec(),
        at: 0,
    };
    let mut keys = vec![];
    while let Some(key) = c.ident() {
        keys.push(key);
        if !c.punct(',') {
            break;
        }
    }
    keys
}

/// Reads a Metrics Insights query; `None` when it does not follow the grammar above.
pub fn parse_query(sql: &str) -> Option<InsightsQuery> {
    if sql.len() > 10_000 {
        return None;
    }
    let mut c = Cursor {
        tokens: tokens(sql)?,
        at: 0,
    };
    if !c.keyword("SELECT") {
        return None;
    }
    let Token::Word(function) = c.next()? else {
        return None;
    };
    let statistic = statistic(&function)?;
    if !c.punct('(') {
        return None;
    }
    let metric = c.ident()?;
    if !c.punct(')') || !c.keyword("FROM") {
        return None;
    }
    let namespace = if c.keyword("SCHEMA") {
        if !c.punct('(') {
            return None;
        }
        let ns = c.ident()?;
        // The schema's label keys only narrow the metrics matched; skip them.
        while c.punct(',') {
            c.ident()?;
        }
        if !c.punct(')') {
            return None;
        }
        ns
    } else {
        c.ident()?
    };
    let mut q = InsightsQuery {
        namespace,
        metric,
        statistic: statistic.to_string(),
        ..InsightsQuery::default()
    };
    if c.keyword("WHERE") {
        loop {
            let key = c.ident()?;
            let op = match c.next()? {
                Token::Op(op) => op,
                Token::Word(w) => w,
                _ => return None,
            };
            // `IN (...)` and other operators: skip their operand.
            let value = match c.next()? {
                Token::Literal(v) | Token::Number(v) => Some(v),
                Token::Punct('(') => {
                    while !c.punct(')') {
                        c.next()?;
                    }
                    None
                }
                Token::Word(w) | Token::Quoted(w) => Some(w),
                _ => return None,
            };
            if let (true, Some(v)) = (op == "=", value) {
                q.filters.insert(key, v);
            }
            if !c.keyword("AND") {
                break;
            }
        }
    }
    if c.keyword("GROUP") {
        if !c.keyword("BY") {
            return None;
        }
        q.group_by.push(c.ident()?);
        while c.punct(',') {
            q.group_by.push(c.ident()?);
        }
    }
    // ORDER BY and LIMIT shape which series are kept, not what one series is.
    if c.peek().is_some() && !c.at_clause() {
        return None;
    }
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpn_query_grouped_by_vpn_id() {
        let q = parse_query(r#"SELECT MIN(TunnelState) FROM "AWS/VPN" GROUP BY VpnId"#).unwrap();
        assert_eq!(q.namespace, "AWS/VPN");
        assert_eq!(q.metric, "TunnelState");
        assert_eq!(q.statistic, "Minimum");
        assert_eq!(q.group_by, vec!["VpnId".to_string()]);
        assert!(q.filters.is_empty());
    }

    #[test]
    fn documented_examples_parse() {
        let q = parse_query(
            r#"SELECT AVG(ConsumedWriteCapacityUnits) FROM "AWS/DynamoDB" GROUP BY TableName ORDER BY MAX() DESC"#,
        )
        .unwrap();
        assert_eq!(
            (q.namespace.as_str(), q.statistic.as_str()),
            ("AWS/DynamoDB", "Average")
        );
        assert_eq!(q.group_by, vec!["TableName".to_string()]);

        let q = parse_query(
            r#"select max(mem_used_percent) from "CWAgent" group by InstanceId order by max() desc limit 10"#,
        )
        .unwrap();
        assert_eq!(q.metric, "mem_used_percent");
        assert_eq!(q.statistic, "Maximum");

        let q = parse_query(
            r#"SELECT SUM(TunnelDataOut) FROM SCHEMA("AWS/VPN", VpnId) WHERE VpnId = 'vpn-0f1e2d3c4b5a69788' AND TunnelIpAddress != '203.0.113.10'"#,
        )
        .unwrap();
        assert_eq!(q.namespace, "AWS/VPN");
        assert_eq!(q.statistic, "Sum");
        assert_eq!(
            q.filters.get("VpnId").map(String::as_str),
            Some("vpn-0f1e2d3c4b5a69788")
        );
        assert_eq!(q.filters.len(), 1, "only equalities name a dimension value");
        assert!(q.group_by.is_empty());

        let q = parse_query(r#"SELECT COUNT(Errors) FROM "AWS/Lambda" WHERE FunctionName IN ('a', 'b') GROUP BY FunctionName, Resource"#).unwrap();
        assert_eq!(q.statistic, "SampleCount");
        assert_eq!(q.group_by.len(), 2);
        assert!(q.filters.is_empty());
    }

    #[test]
    fn quoted_identifiers_and_escapes() {
        let q = parse_query(
            r#"SELECT MAX("my metric") FROM "Custom/Name ""x""" WHERE "Env" = 'it''s'"#,
        )
        .unwrap();
        assert_eq!(q.metric, "my metric");
        assert_eq!(q.namespace, "Custom/Name \"x\"");
        assert_eq!(q.filters.get("Env").map(String::as_str), Some("it's"));
    }

    #[test]
    fn what_is_not_a_query_gives_nothing() {
        for sql in [
            "",
            "m1+m2",
            "SELECT",
            "SELECT MEDIAN(x) FROM y",
            "SELECT MIN(x FROM y",
            "SELECT MIN(x) FROM",
            r#"SELECT MIN(x) FROM "unterminated"#,
            "SELECT MIN(x) FROM y GROUP VpnId",
            "SELECT MIN(x) FROM y WHERE",
            "SELECT MIN(x) FROM y trailing junk",
        ] {
            assert_eq!(parse_query(sql), None, "{sql}");
        }
        assert!(is_insights_query("  select MIN(x) FROM y"));
        // GROUP BY is still found in a query the rest of which is not read.
        assert_eq!(
            group_by_keys(
                "SELECT PERCENTILE(x, 99) FROM y GROUP BY VpnId, Region ORDER BY MAX() DESC"
            ),
            vec!["VpnId".to_string(), "Region".to_string()]
        );
        assert_eq!(
            group_by_keys(r#"SELECT MIN(x) FROM "y" GROUP BY "VpnId""#),
            vec!["VpnId".to_string()]
        );
        assert!(group_by_keys("SELECT MEDIAN(x) FROM y").is_empty());
        assert!(group_by_keys(r#"SELECT "unterminated GROUP BY x"#).is_empty());
        assert!(!is_insights_query("SELECTED(m1)"));
        assert!(!is_insights_query("ANOMALY_DETECTION_BAND(m1, 2)"));
    }
}
