//! Reading a config file, with errors that name file, line, column and field.

use std::{fmt, path::Path};

use super::FileConfig;

/// A config file that cannot be used. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, when the error came from one.
    pub file: Option<String>,
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// The field, as a path (`filters[1].retry.budget_percent`).
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
                if let Some(column) = self.column {
                    write!(f, ":{column}")?;
                }
            }
            write!(f, ": ")?;
        }
        if let Some(path) = self.path.as_deref().filter(|p| !p.is_empty() && *p != ".") {
            write!(f, "{path}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl ConfigError {
    /// An error about a value, without a position in a file.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            column: None,
            path: Some(path.into()),
            message: message.into(),
        }
    }

    /// Attaches the file name.
    pub fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.display().to_string());
        self
    }

    /// For an error found after parsing, the file and the line and column of
    /// its field in it (read again; unchanged when the field is not in the
    /// file, e.g. it came from a flag or the environment).
    pub fn at_field_in(self, file: &Path) -> Self {
        if self.line.is_some() {
            return self;
        }
        match std::fs::read_to_string(file) {
            Ok(text) => match self.at_field(&text) {
                located if located.line.is_some() => located.in_file(file),
                elsewhere => elsewhere,
            },
            Err(_) => self,
        }
    }

    /// Fills in the line and column of the field in `text`, when missing.
    fn at_field(mut self, text: &str) -> Self {
        if self.line.is_none() {
            if let Some((line, column)) = self
                .path
                .as_deref()
                .and_then(|path| super::locate::locate(text, path))
            {
                self.line = Some(line);
                self.column = Some(column);
                if let Some(hint) = super::locate::folded_line_hint(text, line) {
                    self.message = format!("{} ({hint})", self.message);
                }
            }
        }
        self
    }
}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError {
            file: None,
            line: None,
            column: None,
            path: None,
            message: format!("cannot read config file: {e}"),
        }
        .in_file(path)
    })?;
    parse_yaml(&text).map_err(|e| e.in_file(path))
}

/// Parses and validates YAML config text.
pub fn parse_yaml(text: &str) -> Result<FileConfig, ConfigError> {
    let mut field: Option<String> = None;
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, FileConfig>(de).map_err(|e| {
            field = Some(e.path().to_string());
            e.into_inner()
        })
    });
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            let location = e.location().map(|l| (l.line(), l.column()));
            let message = e.without_snippet().to_string();
            // saphyr prefixes its own position; keep one, ours, at the front.
            let mut message =
                super::locate::plain_message(&strip_position(&message), text, location);
            if let Some(hint) =
                location.and_then(|(line, _)| super::locate::folded_line_hint(text, line))
            {
                message = format!("{message} ({hint})");
            }
            return Err(ConfigError {
                file: None,
                line: location.map(|(line, _)| line),
                column: location.map(|(_, column)| column),
                // An error outside any field has no path worth showing.
                path: field.filter(|f| f != "?" && f != "."),
                message,
            });
        }
    };
    validate(&config).map_err(|e| e.at_field(text))?;
    Ok(config)
}

fn strip_position(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = first.find(" at line ").map_or(first, |i| &first[..i]);
    first.trim().to_string()
}

fn validate(config: &FileConfig) -> Result<(), ConfigError> {
    for (i, f) in config.filters.iter().enumerate() {
        f.validate().map_err(|e| {
            ConfigError::invalid(format!("filters[{i}].{}.{}", f.name(), e.field), e.message)
        })?;
    }
    if let Some(bytes) = config.inbound.max_header_bytes {
        if !(1024..=crate::smuggling::MAX_HEAD).contains(&bytes) {
            return Err(ConfigError::invalid(
                "inbound.max_header_bytes",
                format!(
                    "{bytes} is out of range: 1024 to {} bytes (every head larger than that is refused)",
                    crate::smuggling::MAX_HEAD
                ),
            ));
        }
    }
    config
        .limits
        .validate()
        .map_err(|(field, message)| ConfigError::invalid(format!("limits.{field}"), message))?;
    if let Some(upstream) = &config.inbound.upstream {
        super::settings::parse_upstream(upstream)
            .map_err(|m| ConfigError::invalid("inbound.upstream", m))?;
    }
    // Routes and their chains, checked as a reload checks them.
    filters::route::check_routes(&config.routes)
        .map_err(|e| ConfigError::invalid(format!("routes[{}].{}", e.index, e.field), e.message))?;
    // The trace layer's own validation: sampler, propagators, export, capture, routes.
    filters::trace::TraceSettings::new(
        &config.tracing,
        &config.routes,
        filters::trace::TraceMetrics::noop(),
    )
    .map_err(|e| ConfigError::invalid(e.field, e.message))?;
    let buckets = &config.metrics.duration_buckets;
    if buckets.is_empty()
        || buckets.windows(2).any(|w| w[0] >= w[1])
        || buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
    {
        return Err(ConfigError::invalid(
            "metrics.duration_buckets",
            "must be a non-empty, strictly increasing list of positive seconds",
        ));
    }
    if config.metrics.series_limit == 0 {
        return Err(ConfigError::invalid(
            "metrics.series_limit",
            "must be greater than 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_line_and_field() {
        let err = parse_yaml("inbound:\n  listen: 127.0.0.1:1\n  upstrem: http://x\n").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert_eq!(err.path.as_deref(), Some("inbound.upstrem"), "{err}");
        assert!(!err.message.contains("at line"), "{err}");
        assert!(err.to_string().contains("upstrem"), "{err}");
    }

    #[test]
    fn bad_filter_field_is_named() {
        let yaml = "filters:\n  - timeout: { request: 5s }\n  - timeout: { request: soon }\n";
        let err = parse_yaml(yaml).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(
            err.path.as_deref().unwrap_or("").contains("filters[1]"),
            "{err}"
        );
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn unknown_filter_is_an_error() {
        let err = parse_yaml("filters:\n  - teleport: {}\n").unwrap_err();
        assert!(err.to_string().contains("teleport"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_field() {
        let err = parse_yaml("filters:\n  - timeout: { request: 0s }\n").unwrap_err();
        assert_eq!(
            err.path.as_deref(),
            Some("filters[0].timeout.request"),
            "{err}"
        );
        let err = parse_yaml("inbound: { upstream: 'ftp://x' }\n").unwrap_err();
        assert_eq!(err.path.as_deref(), Some("inbound.upstream"), "{err}");
    }

    #[test]
    fn route_errors_name_the_route_field_and_line() {
        let yaml = "routes:\n  - prefix: /a\n    name: a\n  - prefix: /b\n    name: b\n    filters:\n      - timeout: { request: 5s }\n      - rate_limit: { per_second: 0 }\n";
        let err = parse_yaml(yaml).unwrap_err();
        assert_eq!(
            err.path.as_deref(),
            Some("routes[1].filters[1].rate_limit.per_second"),
            "{err}"
        );
        assert_eq!(err.line, Some(8), "{err}");
        let err = parse_yaml("routes:\n  - { prefix: /a, name: a, method: get }\n").unwrap_err();
        assert_eq!(err.path.as_deref(), Some("routes[0].method"), "{err}");
        assert!(err.to_string().contains("write GET"), "{err}");
        let err = parse_yaml("routes:\n  - { prefix: /a, name: a }\n  - { prefix: /a, name: b }\n")
            .unwrap_err();
        assert_eq!(
            (err.path.as_deref(), err.line),
            (Some("routes[1].prefix"), Some(3)),
            "{err}"
        );
    }

    #[test]
    fn the_routes_example_in_the_configuration_reference_parses() {
        let docs = include_str!("../../../docs/config.md");
        let section = docs
            .split("\n## Routes\n")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("docs/config.md has a Routes section");
        let yaml = section
            .split("```yaml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("the Routes section has a yaml example");
        let config = parse_yaml(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let chains: Vec<_> = config
            .routes
            .iter()
            .map(|r| (r.name.as_str(), r.filters.as_ref().map(Vec::len), r.inherit))
            .collect();
        assert_eq!(
            chains,
            [
                ("checkout", Some(1), false),
                ("catalog", Some(2), true),
                ("health", Some(0), false)
            ]
        );
        assert_eq!(config.filters.len(), 1);
    }

    #[test]
    fn file_errors_carry_the_file() {
        let dir = std::env::temp_dir().join(format!("sidetrace-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.yaml");
        std::fs::write(&path, "admin:\n  listen: nowhere\n").unwrap();
        let err = load_file(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:2:", path.display())),
            "{text}"
        );
        assert!(text.contains("admin.listen"), "{text}");
    }
}
