//! HTML building blocks: escaping, the page layout with its landmarks, and small
//! helpers for forms and tables. Every dynamic value goes through [`esc`].

use axum::response::Html;

use super::session::Me;
use crate::time::rfc3339_ms;

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a value for a query string or a form body.
pub fn pct(s: &str) -> String {
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

/// A time for people: `2026-11-26 04:34 UTC`.
pub fn when(ms: i64) -> String {
    let s = rfc3339_ms(ms);
    format!("{} {} UTC", &s[..10], &s[11..16])
}

pub fn when_opt(ms: Option<i64>) -> String {
    ms.map(when).unwrap_or_else(|| "—".into())
}

/// The hidden CSRF field of every form.
pub fn csrf_field(me: &Me) -> String {
    format!(
        r#"<input type="hidden" name="csrf" value="{}">"#,
        esc(&me.csrf)
    )
}

/// A one-button POST form (archive, revoke, …).
pub fn button_form(me: &Me, action: &str, label: &str, class: &str) -> String {
    format!(
        r#"<form method="post" action="{}" class="inline">{}<button type="submit" class="{class}">{}</button></form>"#,
        esc(action),
        csrf_field(me),
        esc(label)
    )
}

/// A notice or error banner.
pub fn banner(kind: &str, text: &str) -> String {
    let role = if kind == "error" { "alert" } else { "status" };
    format!(
        r#"<div class="banner {kind}" role="{role}">{}</div>"#,
        esc(text)
    )
}

/// A secret shown once, with a copy button.
pub fn reveal_box(label: &str, id: &str, value: &str, note: &str) -> String {
    format!(
        r#"<section class="reveal" aria-labelledby="{id}-label">
<label id="{id}-label" for="{id}">{}</label>
<div class="copyrow"><input id="{id}" type="text" readonly value="{}" autocomplete="off" spellcheck="false">
<button type="button" class="secondary" data-copy="{id}">Copy</button></div>
<p class="hint" id="{id}-status" aria-live="polite">{}</p>
</section>"#,
        esc(label),
        esc(value),
        esc(note)
    )
}

/// The navigation entries: path and label.
const NAV: &[(&str, &str)] = &[
    ("/console/tunnels", "Tunnels"),
    ("/console/federation", "Federation"),
    ("/console/service-accounts", "Service accounts"),
    ("/console/keys", "API & client keys"),
    ("/console/users", "Users"),
    ("/console/settings", "Settings"),
    ("/console/audit", "Audit log"),
];

/// A whole page: skip link, header with navigation and the user, `<main>`.
pub fn layout(title: &str, me: Option<&Me>, current: &str, body: &str) -> Html<String> {
    let nav = match me {
        None => String::new(),
        Some(me) => {
            let items: String = NAV
                .iter()
                .map(|(href, label)| {
                    let cur = if *href == current {
                        r#" aria-current="page""#
                    } else {
                        ""
                    };
                    format!(r#"<li><a href="{href}"{cur}>{label}</a></li>"#)
                })
                .collect();
            let readonly = if me.can_manage() {
                String::new()
            } else {
                r#"<span class="badge readonly" title="Your role can view but not change anything">read-only</span>"#.into()
            };
            format!(
                r#"<nav aria-label="Main"><ul>{items}</ul></nav>
<div class="who"><span title="signed in with {}">{} <span class="badge">{}</span></span>{readonly}
<form method="post" action="/console/logout" class="inline">{}<button type="submit" class="link">Sign out</button></form></div>"#,
                me.method.as_str(),
                esc(&me.user.login),
                esc(me.user.role.as_str()),
                csrf_field(me)
            )
        }
    };
    Html(format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} · mcp-tunnel console</title>
<link rel="stylesheet" href="/console/static/console.css">
<script src="/console/static/console.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><a class="brand" href="/console/tunnels">mcp-tunnel</a>{nav}</header>
<main id="main" tabindex="-1">
<h1>{}</h1>
{body}
</main>
</body>
</html>
"##,
        esc(title),
        esc(title)
    ))
}

/// A page for a refused or failed request.
pub fn error_page(title: &str, message: &str) -> Html<String> {
    layout(
        title,
        None,
        "",
        &format!(
            r#"{}<p><a href="/console/tunnels">Back to the console</a></p>"#,
            banner("error", message)
        ),
    )
}

/// A table with a caption; `rows` are already-escaped `<tr>` contents.
pub fn table(caption: &str, headers: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!(r#"<p class="empty">{}</p>"#, esc(empty));
    }
    let th: String = headers
        .iter()
        .map(|h| format!(r#"<th scope="col">{}</th>"#, esc(h)))
        .collect();
    let body: String = rows.iter().map(|r| format!("<tr>{r}</tr>")).collect();
    format!(
        r#"<div class="tablewrap"><table><caption>{}</caption><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>"#,
        esc(caption)
    )
}

/// `<td>` with escaped text.
pub fn td(s: &str) -> String {
    format!("<td>{}</td>", esc(s))
}

/// `<td>` with monospace escaped text.
pub fn td_code(s: &str) -> String {
    format!(r#"<td><code>{}</code></td>"#, esc(s))
}

/// `<td>` with monospace text kept on one line (ids, action names).
pub fn td_code_nowrap(s: &str) -> String {
    format!(r#"<td class="nowrap"><code>{}</code></td>"#, esc(s))
}

/// A status badge.
pub fn status(s: &str) -> String {
    let label = match s {
        "needs_certificate" => "Needs certificate",
        "active" => "Active",
        "archived" => "Archived",
        "revoked" => "Revoked",
        "expired" => "Expired",
        "disabled" => "Disabled",
        other => other,
    };
    format!(r#"<span class="status {}">{}</span>"#, esc(s), esc(label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(pct("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
