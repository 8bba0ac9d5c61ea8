//! Rendering of Dockerfile errors and warnings: the message, then the file name, line and
//! column with the offending source line (annotate-snippets).

use annotate_snippets::{Level, Renderer, Snippet};
use dockerfile::Span;

/// `error: <message>` followed by ` --> <file>:<line>:<column>` and the source excerpt.
/// Without a span, just the message with the file name.
pub(crate) fn render_error(file: &str, source: &str, message: &str, span: Option<Span>) -> String {
    render(Level::Error, file, source, message, span)
}

/// Like [`render_error`], as a warning.
pub(crate) fn render_warning(
    file: &str,
    source: &str,
    message: &str,
    span: Option<Span>,
) -> String {
    render(Level::Warning, file, source, message, span)
}

fn render(level: Level, file: &str, source: &str, message: &str, span: Option<Span>) -> String {
    let Some(span) = span.filter(|s| {
        s.end <= source.len()
            && s.start <= s.end
            && source.is_char_boundary(s.start)
            && source.is_char_boundary(s.end)
    }) else {
        let prefix = if matches!(level, Level::Error) {
            "error"
        } else {
            "warning"
        };
        return format!("{prefix}: {file}: {message}");
    };
    // Point at the first line of the span (a whole instruction may continue over several).
    let line_end = source[span.start..]
        .find('\n')
        .map_or(source.len(), |i| span.start + i);
    let mut end = span.end.min(line_end);
    if end == span.start {
        // An empty span: mark one character when there is one.
        end = source[span.start..]
            .chars()
            .next()
            .filter(|c| *c != '\n')
            .map_or(span.start, |c| span.start + c.len_utf8());
    }
    let snippet = Snippet::source(source)
        .origin(file)
        .line_start(1)
        .fold(true)
        .annotation(level.span(span.start..end));
    let renderer = Renderer::plain();
    renderer
        .render(level.title(message).snippet(snippet))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_file_line_and_column() {
        let src = "FROM alpine\nRUN true\nFORM x\n";
        let span = Span {
            start: 21,
            end: 25,
            start_line: 3,
            start_column: 1,
            end_line: 3,
            end_column: 5,
        };
        let out = render_error("Dockerfile", src, "unknown instruction: FORM", Some(span));
        assert!(out.starts_with("error: unknown instruction: FORM"), "{out}");
        assert!(out.contains("--> Dockerfile:3:1"), "{out}");
        assert!(out.contains("3 | FORM x"), "{out}");
        assert!(out.contains("^^^^"), "{out}");
    }

    #[test]
    fn without_span() {
        assert_eq!(
            render_error(
                "Dockerfile",
                "",
                "dockerfile contains no stages to build",
                None
            ),
            "error: Dockerfile: dockerfile contains no stages to build"
        );
    }
}
