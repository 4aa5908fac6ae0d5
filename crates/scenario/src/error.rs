use std::fmt;

/// A bad scenario: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    /// 1-based; 0 when the error concerns the whole file (unreadable).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for ScenarioError {}

/// 1-based line and column of byte offset `at` in `text`.
pub(crate) fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl ScenarioError {
    pub(crate) fn at(
        file: &str,
        text: &str,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_col(text, span.start);
        ScenarioError {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    pub(crate) fn from_toml(file: &str, text: &str, e: &toml::de::Error) -> Self {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ScenarioError {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    }
}
