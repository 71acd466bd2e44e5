//! Expands a panel's SQL the way Grafana and the grafana-clickhouse-datasource
//! plugin do before the query reaches ClickHouse, in the same order:
//!
//! 1. the plugin's frontend (`applyTemplateVariables` in
//!    grafana/clickhouse-datasource `src/data/CHDatasource.ts`): first
//!    `$__conditionalAll(condition, $var)`, which becomes `1=1` when the
//!    variable is "All" or empty; then Grafana's template variables, formatted
//!    by the plugin's `format` (an array becomes `'a','b'`, a single value is
//!    inserted as is) unless the reference names a format (`${var:singlequote}`);
//! 2. the plugin's backend macros (grafana/clickhouse-datasource
//!    `pkg/macros/macros.go`, applied by grafana/sqlds `macros.go`, which
//!    matches `$__name` with an optional `(args)` up to the first `)`):
//!    `$__timeFilter(c)` → `c >= toDateTime(from) AND c <= toDateTime(to)`,
//!    `$__fromTime`/`$__toTime` → `toDateTime(seconds)`, `$__interval_s` →
//!    the interval in whole seconds (at least 1), `$__timeInterval(c)` →
//!    `toStartOfInterval(toDateTime(c), INTERVAL n second)`.
//!
//! Anything else that looks like a macro or a variable is an error, so a
//! dashboard cannot use something this expansion (and so this test) does not
//! understand.

use std::collections::BTreeMap;

/// The dashboard time range and interval a query is expanded for.
pub struct Range {
    pub from: u32,
    pub to: u32,
    pub interval_s: u32,
}

/// A template variable's current value: "All" or the selected values.
#[derive(Debug, Clone)]
pub enum Value {
    All,
    Single(String),
    Multi(Vec<String>),
}

pub type Variables = BTreeMap<String, Value>;

/// The variables of a dashboard JSON at their saved (default) values.
pub fn defaults(dashboard: &serde_json::Value) -> Variables {
    let mut variables = Variables::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = variable["name"].as_str().expect("variable without a name");
        let current = &variable["current"]["value"];
        let value = match current {
            serde_json::Value::String(s) if s == "$__all" => Value::All,
            serde_json::Value::String(s) => Value::Single(s.clone()),
            serde_json::Value::Array(values) => {
                let values: Vec<String> = values
                    .iter()
                    .map(|v| v.as_str().expect("string value").to_owned())
                    .collect();
                if values.iter().any(|v| v == "$__all") {
                    Value::All
                } else {
                    Value::Multi(values)
                }
            }
            other => panic!("variable {name}: unsupported current value {other}"),
        };
        variables.insert(name.to_owned(), value);
    }
    variables
}

/// The SQL ClickHouse receives for `sql`.
pub fn expand(sql: &str, variables: &Variables, range: &Range) -> Result<String, String> {
    let sql = conditional_all(sql, variables)?;
    let sql = template_variables(&sql, variables)?;
    backend_macros(&sql, range)
}

fn conditional_all(sql: &str, variables: &Variables) -> Result<String, String> {
    const MACRO: &str = "$__conditionalAll(";
    let mut sql = sql.to_owned();
    // Innermost last, like the plugin (it works from `lastIndexOf`).
    while let Some(start) = sql.rfind(MACRO) {
        let open = start + MACRO.len() - 1;
        let (args, close) = macro_args(&sql, open)?;
        let [condition, variable] = args.as_slice() else {
            return Err(format!("$__conditionalAll needs 2 arguments, got {args:?}"));
        };
        let name = variable
            .trim()
            .trim_start_matches('$')
            .trim_start_matches('{')
            .trim_end_matches('}');
        let all = match variables.get(name) {
            Some(Value::All) => true,
            Some(Value::Single(v)) => v.is_empty(),
            Some(Value::Multi(v)) => v.is_empty(),
            None => return Err(format!("$__conditionalAll on unknown variable {name:?}")),
        };
        let phrase = if all { "1=1" } else { condition.as_str() };
        sql.replace_range(start..=close, phrase);
    }
    Ok(sql)
}

/// The comma-separated arguments of the call whose `(` is at `open`, split at
/// its own depth, and the index of its `)`.
fn macro_args(sql: &str, open: usize) -> Result<(Vec<String>, usize), String> {
    let mut depth = 0;
    let mut args = Vec::new();
    let mut start = open + 1;
    for (i, c) in sql[open..].char_indices().map(|(i, c)| (open + i, c)) {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 1 => {
                args.push(sql[start..i].to_owned());
                start = i + 1;
            }
            _ => {}
        }
        if depth == 0 {
            args.push(sql[start..i].to_owned());
            return Ok((args, i));
        }
    }
    Err(format!("unbalanced parentheses after {}", &sql[..open]))
}

fn template_variables(sql: &str, variables: &Variables) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        // `${name}` / `${name:format}` or `$name`.
        let (name, format, used) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or("unclosed ${")?;
            let (name, format) = match inner[..end].split_once(':') {
                Some((n, f)) => (n, Some(f)),
                None => (&inner[..end], None),
            };
            (name, format, end + 2)
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..len], None, len)
        };
        if name.starts_with("__") {
            // A macro for the backend (or a Grafana built-in, which the
            // backend step rejects): left as it is.
            out.push('$');
            rest = after;
            continue;
        }
        let value = variables
            .get(name)
            .ok_or_else(|| format!("unknown variable ${name}"))?;
        out.push_str(&format_value(name, value, format)?);
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

fn format_value(name: &str, value: &Value, format: Option<&str>) -> Result<String, String> {
    let quote = |v: &String| format!("'{}'", v.replace('\'', "\\'"));
    match (value, format) {
        (Value::All, _) => Err(format!(
            "${name} is \"All\" outside $__conditionalAll: give it an allValue or wrap the condition"
        )),
        (Value::Single(v), None) => Ok(v.clone()),
        (Value::Multi(values), None) | (Value::Multi(values), Some("singlequote")) => {
            Ok(values.iter().map(quote).collect::<Vec<_>>().join(","))
        }
        (Value::Single(v), Some("singlequote")) => Ok(quote(v)),
        (_, Some(other)) => Err(format!("${{{name}:{other}}}: format not supported here")),
    }
}

fn backend_macros(sql: &str, range: &Range) -> Result<String, String> {
    let to_datetime = |seconds: u32| format!("toDateTime({seconds})");
    let mut out = String::new();
    let mut rest = sql;
    while let Some(start) = rest.find("$__") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..len];
        // sqlds: optional arguments, up to the first `)`.
        let (args, used) = match after[len..].strip_prefix('(') {
            Some(inner) => {
                let end = inner.find(')').ok_or("unclosed macro arguments")?;
                let args: Vec<&str> = inner[..end].split(',').map(str::trim).collect();
                (args, len + end + 2)
            }
            None => (Vec::new(), len),
        };
        let one_arg = || match args.as_slice() {
            [column] if !column.is_empty() => Ok(*column),
            _ => Err(format!("$__{name} needs one argument, got {args:?}")),
        };
        let expansion = match name {
            "timeFilter" => {
                let c = one_arg()?;
                format!(
                    "{c} >= {} AND {c} <= {}",
                    to_datetime(range.from),
                    to_datetime(range.to)
                )
            }
            "fromTime" => to_datetime(range.from),
            "toTime" => to_datetime(range.to),
            "interval_s" => range.interval_s.max(1).to_string(),
            "timeInterval" => format!(
                "toStartOfInterval(toDateTime({}), INTERVAL {} second)",
                one_arg()?,
                range.interval_s.max(1)
            ),
            other => return Err(format!("macro $__{other} is not supported")),
        };
        out.push_str(&expansion);
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Range {
        Range {
            from: 100,
            to: 200,
            interval_s: 60,
        }
    }

    #[test]
    fn expands_like_the_plugin() {
        let mut vars = Variables::new();
        vars.insert("synthetic".into(), Value::Single("0".into()));
        vars.insert("country".into(), Value::All);
        vars.insert(
            "transport".into(),
            Value::Multi(vec!["websocket".into(), "o'k".into()]),
        );
        let sql = "SELECT toDateTime(intDiv(toUInt32(m), $__interval_s) * $__interval_s) AS t \
                   FROM x WHERE $__timeFilter(m) AND s <= $synthetic \
                   AND $__conditionalAll(country IN (${country:singlequote}), $country) \
                   AND $__conditionalAll(transport IN (${transport:singlequote}), $transport) \
                   AND m < $__toTime - 5";
        assert_eq!(
            expand(sql, &vars, &range()).unwrap(),
            "SELECT toDateTime(intDiv(toUInt32(m), 60) * 60) AS t \
             FROM x WHERE m >= toDateTime(100) AND m <= toDateTime(200) AND s <= 0 \
             AND 1=1 \
             AND transport IN ('websocket','o\\'k') \
             AND m < toDateTime(200) - 5"
        );
        assert!(
            expand("SELECT $__timeInterval(m)", &vars, &range())
                .unwrap()
                .contains("toStartOfInterval(toDateTime(m), INTERVAL 60 second)")
        );
        assert!(expand("SELECT $__from", &vars, &range()).is_err());
        assert!(expand("SELECT $nope", &vars, &range()).is_err());
        assert!(expand("SELECT ${country:singlequote}", &vars, &range()).is_err());
    }
}
