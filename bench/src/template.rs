//! The report's Markdown templates (bench/report/) and how they are filled: a
//! `{{name}}` placeholder is replaced by the value of that name.

use anyhow::{bail, Context, Result};

/// `template` with every `{{name}}` replaced by its value in `values`. Errors on a
/// placeholder without a value and on a value no placeholder uses (a name misspelt on
/// either side). An empty value leaves no blank lines behind: runs of blank lines are
/// collapsed into one, so a placeholder alone in its paragraph can be left out.
pub fn fill(template: &str, values: &[(&str, String)]) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut used = vec![false; values.len()];
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").context("a `{{` without its `}}`")?;
        let name = &after[..end];
        let Some(i) = values.iter().position(|(n, _)| *n == name) else {
            bail!("no value for the placeholder {{{{{name}}}}}");
        };
        used[i] = true;
        out.push_str(&values[i].1);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if let Some(i) = used.iter().position(|u| !u) {
        bail!("no placeholder {{{{{}}}}} in the template", values[i].0);
    }
    while out.contains("\n\n\n") {
        out = out.replace("\n\n\n", "\n\n");
    }
    Ok(out)
}

/// The text under the heading `# name` of `text` (a file of named paragraphs, such as
/// bench/report/paragraphs.md), without the blank lines around it. What comes before
/// the first heading is not a paragraph.
pub fn paragraph<'a>(text: &'a str, name: &str) -> Result<&'a str> {
    text.split("\n# ")
        .skip(1)
        .find_map(|section| {
            let (heading, body) = section.split_once('\n').unwrap_or((section, ""));
            (heading.trim() == name).then(|| body.trim())
        })
        .with_context(|| format!("no paragraph `# {name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn placeholders_are_filled() {
        let t = "a {{x}} b {{y}}{{x}}.";
        assert_eq!(
            fill(t, &v(&[("x", "1"), ("y", "{{z}}")])).unwrap(),
            "a 1 b {{z}}1."
        );
        assert_eq!(fill("no placeholder", &[]).unwrap(), "no placeholder");
    }

    #[test]
    fn unknown_unused_and_unclosed_placeholders_are_errors() {
        let err = fill("a {{x}} {{typo}}", &v(&[("x", "1")])).unwrap_err();
        assert!(err.to_string().contains("{{typo}}"), "{err}");
        let err = fill("a {{x}}", &v(&[("x", "1"), ("y", "2")])).unwrap_err();
        assert!(err.to_string().contains("{{y}}"), "{err}");
        assert!(fill("a {{x", &v(&[("x", "1")])).is_err());
    }

    #[test]
    fn an_empty_block_leaves_no_blank_lines() {
        let t = "A\n\n{{b}}\n\nC\n";
        assert_eq!(fill(t, &v(&[("b", "")])).unwrap(), "A\n\nC\n");
        assert_eq!(fill(t, &v(&[("b", "B")])).unwrap(), "A\n\nB\n\nC\n");
    }

    #[test]
    fn paragraphs_are_found_by_name() {
        let text = "About.\n\n# one\n\nFirst {{x}}.\n\n# two words\n\nSecond,\nwrapped.\n";
        assert_eq!(paragraph(text, "one").unwrap(), "First {{x}}.");
        assert_eq!(paragraph(text, "two words").unwrap(), "Second,\nwrapped.");
        assert!(paragraph(text, "About.").is_err());
        assert!(paragraph(text, "three").is_err());
    }
}
