//! The contract reference: the newest WIT package (`wit/0.2.3/backend.wit`, compiled into the
//! binary) as Markdown, one section per interface and world with its documentation as prose
//! and its declarations as WIT. `modcsi backend contract` prints it; docs/backend-authors.md
//! carries it verbatim, and a test keeps the two equal.

const WIT: &str = include_str!("../../../wit/0.2.3/backend.wit");

/// The reference as Markdown.
pub fn markdown() -> String {
    let mut out = String::new();
    let mut docs: Vec<&str> = vec![];
    let mut lines = WIT.lines();
    while let Some(line) = lines.next() {
        if let Some(doc) = line.strip_prefix("///") {
            docs.push(doc.strip_prefix(' ').unwrap_or(doc));
            continue;
        }
        if let Some(package) = line.strip_prefix("package ") {
            out += &format!(
                "The package `{}`.\n\n{}\n",
                package.trim_end_matches(';'),
                prose(&docs)
            );
        } else if let Some((kind, name)) = ["interface ", "world "]
            .iter()
            .find_map(|k| line.strip_prefix(k).map(|rest| (k.trim(), rest)))
        {
            let name = name.trim_end_matches('{').trim();
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "}").collect();
            out += &format!("### {kind} `{name}`\n\n");
            if !docs.is_empty() {
                out += &format!("{}\n", prose(&docs));
            }
            out += &format!("```wit\n{}\n```\n\n", dedent(&body));
        }
        docs.clear();
    }
    format!("{}\n", out.trim_end())
}

/// Doc-comment lines as paragraphs.
fn prose(docs: &[&str]) -> String {
    let mut text = docs.join("\n");
    text.push('\n');
    text
}

/// The body of an interface without its first level of indentation.
fn dedent(body: &[&str]) -> String {
    body.iter()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_interface_and_the_world_get_a_section() {
        let reference = super::markdown();
        for section in [
            "### interface `types`",
            "### interface `controller`",
            "### interface `locate`",
            "### interface `ssh`",
            "### world `backend`",
        ] {
            assert!(reference.contains(section), "{section}");
        }
        assert!(reference.starts_with("The package `modcsi:backend@0.2.3`."));
        assert!(reference.contains("create-volume: func(request: create-request)"));
        // An interface's own doc comment becomes prose; its members keep theirs, in the WIT.
        assert!(reference.contains("\nThe required core. A backend's own world"));
        assert!(!reference.contains("/// The required core."));
        assert!(reference.contains("\n/// Why a call failed."));
    }
}
