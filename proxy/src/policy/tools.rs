//! Which tools clients see, and under what names: include and exclude
//! lists (names with `*` wildcards) and renames, mapped back on calls.

use std::collections::HashMap;

use shadowcat_crds::ToolsConfig;

/// The tool filter and renames of a policy.
#[derive(Debug, Default)]
pub struct Tools {
    include: Vec<String>,
    exclude: Vec<String>,
    /// Upstream name to (client name, description).
    shown_as: HashMap<String, (String, Option<String>)>,
    /// Client name to upstream name.
    called_as: HashMap<String, String>,
    /// The unknown-tool message, `{name}` standing for the tool.
    unknown: Option<String>,
}

/// What a client's tool name means.
#[derive(Debug, PartialEq, Eq)]
pub enum Called<'a> {
    /// A visible tool, by its upstream name.
    Tool(&'a str),
    /// No tool the client may see: answer as for an unknown tool.
    Hidden,
}

impl Tools {
    /// From the config.
    pub fn new(config: Option<&ToolsConfig>) -> Self {
        let Some(config) = config else {
            return Self::default();
        };
        Self {
            include: config.include.clone(),
            exclude: config.exclude.clone(),
            shown_as: config
                .rename
                .iter()
                .map(|r| (r.from.clone(), (r.to.clone(), r.description.clone())))
                .collect(),
            called_as: config
                .rename
                .iter()
                .map(|r| (r.to.clone(), r.from.clone()))
                .collect(),
            unknown: config.unknown_tool_message.clone(),
        }
    }

    /// What a call of a tool the client may not see is told.
    pub fn unknown_message(&self, name: &str) -> String {
        match &self.unknown {
            Some(template) => template.replace("{name}", name),
            None => format!("Unknown tool: {name}"),
        }
    }

    /// Whether the filter or renames change anything.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty() && self.shown_as.is_empty()
    }

    /// Whether the upstream's tool `name` passes include/exclude.
    pub fn visible(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob(p, name)))
            && !self.exclude.iter().any(|p| glob(p, name))
    }

    /// The upstream tool a client's name stands for.
    pub fn called<'a>(&'a self, name: &'a str) -> Called<'a> {
        if let Some(upstream) = self.called_as.get(name) {
            return if self.visible(upstream) {
                Called::Tool(upstream)
            } else {
                Called::Hidden
            };
        }
        // A renamed tool is reachable only by its new name.
        if self.shown_as.contains_key(name) || !self.visible(name) {
            return Called::Hidden;
        }
        Called::Tool(name)
    }

    /// The name and description a client sees for upstream tool `name`.
    pub fn shown(&self, name: &str) -> Option<(&str, Option<&str>)> {
        self.shown_as
            .get(name)
            .map(|(to, description)| (to.as_str(), description.as_deref()))
    }
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use shadowcat_crds::RenameConfig;

    use super::*;

    #[test]
    fn globs() {
        assert!(glob("admin_*", "admin_reset"));
        assert!(!glob("admin_*", "user_admin_reset"));
        assert!(glob("*_admin", "reset_admin"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxc"));
        assert!(glob("echo", "echo"));
        assert!(!glob("echo", "echo2"));
        assert!(glob("*", ""));
        assert!(!glob("ab*ba", "aba"), "the prefix and suffix must not overlap");
    }

    #[test]
    fn renamed_tools_answer_only_to_their_new_name() {
        let tools = Tools::new(Some(&ToolsConfig {
            include: vec![],
            exclude: vec!["admin_*".into()],
            rename: vec![
                RenameConfig {
                    from: "echo".into(),
                    to: "say".into(),
                    description: Some("Says it back".into()),
                },
                RenameConfig {
                    from: "admin_wipe".into(),
                    to: "wipe".into(),
                    description: None,
                },
            ],
            unknown_tool_message: None,
        }));
        assert_eq!(tools.called("say"), Called::Tool("echo"));
        assert_eq!(tools.called("echo"), Called::Hidden);
        assert_eq!(tools.called("add"), Called::Tool("add"));
        assert_eq!(tools.called("admin_reset"), Called::Hidden);
        assert_eq!(tools.called("wipe"), Called::Hidden, "renaming does not un-hide");
        assert_eq!(tools.shown("echo"), Some(("say", Some("Says it back"))));
        assert_eq!(tools.unknown_message("x"), "Unknown tool: x");
    }
}
