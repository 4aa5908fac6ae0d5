use std::fmt;

/// A bad scenario: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    /// 1-based; 0 when the error concerns the whole file (unreadable).
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The file's text and the byte range at fault, for [`ScenarioError::render`].
    pub source: Option<(String, std::ops::Range<usize>)>,
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
            source: Some((text.to_string(), span)),
        }
    }

    /// The error as the Rust compiler shows one: the message, `--> file:line:column`, the
    /// offending line and a caret under the span. Without a span, the one-line form.
    pub fn render(&self) -> String {
        use annotate_snippets::{Level, Renderer, Snippet};
        let Some((text, span)) = &self.source else {
            return format!("error: {self}");
        };
        // An empty span (end of file) still gets a caret.
        let start = span.start.min(text.len());
        let end = span.end.clamp(start, text.len());
        let end = if end == start {
            text[start..]
                .chars()
                .next()
                .map_or(start, |c| start + c.len_utf8())
        } else {
            end
        };
        let message = Level::Error.title(&self.message).snippet(
            Snippet::source(text)
                .line_start(1)
                .origin(&self.file)
                .fold(true)
                .annotation(Level::Error.span(start..end)),
        );
        Renderer::plain().render(message).to_string()
    }

    pub(crate) fn from_toml(file: &str, text: &str, e: &toml::de::Error) -> Self {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ScenarioError {
            file: file.to_string(),
            line,
            column,
            message: e.message().trim().to_string(),
            source: e.span().map(|s| (text.to_string(), s)),
        }
    }
}
