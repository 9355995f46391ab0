//! The interactive table of `top`: what is sorted, filtered and selected, the keys that
//! change it, and how a [`Screen`] is drawn (with ratatui, so tests draw it on
//! ratatui's `TestBackend`).

use std::cmp::Ordering;

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table, TableState};
use ratatui::Frame;

use super::rates::{Row, Screen};
use crate::output::esc;

/// A column the table can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    /// Plugin name.
    Name,
    /// Calls per second.
    Calls,
    /// Errors per second.
    Errors,
    /// Timeouts in all.
    Timeouts,
    /// p50 latency.
    P50,
    /// p99 latency.
    P99,
    /// Workers' CPU.
    Cpu,
    /// Workers' memory.
    Rss,
    /// Running jobs.
    Jobs,
}

/// Every column, in the order shown.
const COLUMNS: [Column; 9] = [
    Column::Name,
    Column::Calls,
    Column::Errors,
    Column::Timeouts,
    Column::P50,
    Column::P99,
    Column::Cpu,
    Column::Rss,
    Column::Jobs,
];

impl Column {
    /// The key that sorts by it.
    fn key(self) -> char {
        match self {
            Column::Name => 'n',
            Column::Calls => 'c',
            Column::Errors => 'e',
            Column::Timeouts => 't',
            Column::P50 => 'p',
            Column::P99 => 'l',
            Column::Cpu => 'u',
            Column::Rss => 'm',
            Column::Jobs => 'j',
        }
    }

    /// Orders `a` before `b` the way this column sorts: names A to Z, figures highest
    /// first, a missing figure last.
    fn compare(self, a: &Row, b: &Row) -> Ordering {
        fn desc<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Ordering {
            match (a, b) {
                (Some(a), Some(b)) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            }
        }
        let by = match self {
            Column::Name => a.name.cmp(&b.name),
            Column::Calls => desc(a.calls_per_s, b.calls_per_s).then(b.calls.cmp(&a.calls)),
            Column::Errors => desc(a.errors_per_s, b.errors_per_s).then(b.errors.cmp(&a.errors)),
            Column::Timeouts => b.timeouts.cmp(&a.timeouts),
            Column::P50 => desc(a.p50_ms, b.p50_ms),
            Column::P99 => desc(a.p99_ms, b.p99_ms),
            Column::Cpu => desc(a.cpu_percent, b.cpu_percent),
            Column::Rss => desc(a.rss_bytes, b.rss_bytes),
            Column::Jobs => b.running_jobs.cmp(&a.running_jobs),
        };
        by.then_with(|| a.name.cmp(&b.name))
    }
}

/// What a key asks for, beyond changing the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing more.
    None,
    /// Leave.
    Quit,
    /// Enable (true) or disable the named plugin.
    Toggle(String, bool),
}

/// The state of the table between frames.
#[derive(Debug)]
pub(crate) struct View {
    /// The sort column.
    pub(crate) sort: Column,
    /// Reversed order.
    pub(crate) reverse: bool,
    /// Only plugins whose name contains this.
    pub(crate) filter: String,
    /// Typing into the filter.
    pub(crate) editing: bool,
    /// The selected plugin, by name (it stays selected when rows move).
    pub(crate) selected: Option<String>,
    /// A line for the user (result of the last action).
    pub(crate) message: String,
}

impl Default for View {
    fn default() -> Self {
        View {
            sort: Column::Calls,
            reverse: false,
            filter: String::new(),
            editing: false,
            selected: None,
            message: String::new(),
        }
    }
}

/// A key, as `top` reads it (decoupled from crossterm for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// A character.
    Char(char),
    /// Up arrow.
    Up,
    /// Down arrow.
    Down,
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Ctrl-C.
    Interrupt,
}

impl View {
    /// The rows of `screen` to show, filtered and sorted.
    pub(crate) fn rows<'a>(&self, screen: &'a Screen) -> Vec<&'a Row> {
        let mut rows: Vec<&Row> = screen
            .plugins
            .iter()
            .filter(|r| r.name.contains(self.filter.as_str()))
            .collect();
        rows.sort_by(|a, b| {
            let o = self.sort.compare(a, b);
            if self.reverse {
                o.reverse()
            } else {
                o
            }
        });
        rows
    }

    /// Applies `key` to the view over `screen`.
    pub(crate) fn key(&mut self, key: Key, screen: &Screen) -> Action {
        if self.editing {
            match key {
                Key::Char(c) if !c.is_control() => self.filter.push(c),
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Enter => self.editing = false,
                Key::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                Key::Interrupt => return Action::Quit,
                _ => {}
            }
            return Action::None;
        }
        let rows = self.rows(screen);
        let at = self
            .selected
            .as_ref()
            .and_then(|s| rows.iter().position(|r| &r.name == s));
        let select = |i: usize| rows.get(i).map(|r| r.name.clone());
        match key {
            Key::Char('q') | Key::Esc | Key::Interrupt => return Action::Quit,
            Key::Down | Key::Char('J') => {
                self.selected = select(at.map_or(0, |i| (i + 1).min(rows.len().saturating_sub(1))))
            }
            Key::Up | Key::Char('K') => {
                self.selected = select(at.map_or(0, |i| i.saturating_sub(1)))
            }
            Key::Char('r') => self.reverse = !self.reverse,
            Key::Char('/') => self.editing = true,
            Key::Char(c @ ('+' | '-')) => {
                return match at.and_then(|i| rows.get(i)) {
                    Some(row) => Action::Toggle(row.name.clone(), c == '+'),
                    None => {
                        self.message = "select a plugin first (up/down)".into();
                        Action::None
                    }
                }
            }
            Key::Char(c) => {
                if let Some(column) = COLUMNS.iter().find(|col| col.key() == c) {
                    self.sort = *column;
                    self.reverse = false;
                }
            }
            _ => {}
        }
        Action::None
    }

    /// Draws `screen` into `frame`.
    pub(crate) fn draw(&self, frame: &mut Frame<'_>, screen: &Screen) {
        let [head, body, foot] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let d = &screen.daemon;
        let summary = format!(
            "dynplugd {} {} | cpu {} | rss {} | in flight {} | jobs {} | {} plugins{}",
            esc(&d.version),
            esc(&d.state),
            percent(d.cpu_percent),
            bytes(Some(d.rss_bytes)),
            d.calls_in_flight,
            d.running_jobs,
            screen.plugins.len(),
            d.interval_s
                .map(|s| format!(" | over {s:.1}s"))
                .unwrap_or_default(),
        );
        frame.render_widget(Paragraph::new(summary), head);
        let rows = self.rows(screen);
        let header = [
            "NAME",
            "STATE",
            "ISOLATION",
            "CALLS/S",
            "ERR/S",
            "TIMEOUTS",
            "P50",
            "P99",
            "CPU%",
            "RSS",
            "JOBS",
        ]
        .into_iter()
        .zip([
            Some(Column::Name),
            None,
            None,
            Some(Column::Calls),
            Some(Column::Errors),
            Some(Column::Timeouts),
            Some(Column::P50),
            Some(Column::P99),
            Some(Column::Cpu),
            Some(Column::Rss),
            Some(Column::Jobs),
        ])
        .map(|(title, column)| {
            let marked = column == Some(self.sort);
            let text = match (marked, self.reverse) {
                (true, false) => format!(
                    "{title}{}",
                    if column == Some(Column::Name) {
                        '▲'
                    } else {
                        '▼'
                    }
                ),
                (true, true) => format!(
                    "{title}{}",
                    if column == Some(Column::Name) {
                        '▼'
                    } else {
                        '▲'
                    }
                ),
                _ => title.to_owned(),
            };
            Cell::from(text)
        });
        let lines = rows.iter().map(|r| {
            let state = if r.enabled {
                r.state.clone()
            } else {
                "disabled".to_owned()
            };
            TableRow::new([
                esc(&r.name).into_owned(),
                state,
                r.isolation.clone(),
                figure(r.calls_per_s),
                figure(r.errors_per_s),
                r.timeouts.to_string(),
                millis(r.p50_ms),
                millis(r.p99_ms),
                percent(r.cpu_percent),
                bytes(r.rss_bytes),
                r.running_jobs.to_string(),
            ])
        });
        let widths = [
            Constraint::Min(12),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(5),
        ];
        let table = Table::new(lines, widths)
            .header(TableRow::new(header).style(Style::new().add_modifier(Modifier::REVERSED)))
            .row_highlight_style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED));
        let mut state = TableState::default().with_selected(
            self.selected
                .as_ref()
                .and_then(|s| rows.iter().position(|r| &r.name == s)),
        );
        frame.render_stateful_widget(table, body, &mut state);
        let footer = if self.editing {
            format!(
                "filter: {}_  (Enter keeps it, Esc clears it)",
                esc(&self.filter)
            )
        } else if !self.message.is_empty() {
            esc(&self.message).into_owned()
        } else {
            let filter = if self.filter.is_empty() {
                String::new()
            } else {
                format!("[filter: {}] ", esc(&self.filter))
            };
            format!(
                "{filter}sort: n c e t p l u m j, r reverse | / filter | up/down select | + enable - disable | q quit"
            )
        };
        frame.render_widget(Paragraph::new(Line::from(footer)), foot);
    }
}

/// A rate, or `-`.
fn figure(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// A duration in ms, or `-`.
fn millis(v: Option<f64>) -> String {
    v.map_or_else(
        || "-".into(),
        |v| {
            if v < 10.0 {
                format!("{v:.3}ms")
            } else {
                format!("{v:.0}ms")
            }
        },
    )
}

/// A percentage, or `-`.
fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// A size in binary units, or `-`.
fn bytes(v: Option<u64>) -> String {
    let Some(v) = v else { return "-".into() };
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut size = v as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < units.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v}B")
    } else {
        format!("{size:.1}{}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn row(name: &str, calls_per_s: f64, p99_ms: f64) -> Row {
        Row {
            name: name.into(),
            state: "loaded".into(),
            isolation: "in-process".into(),
            enabled: true,
            calls_per_s: Some(calls_per_s),
            errors_per_s: Some(0.0),
            p50_ms: Some(p99_ms / 2.0),
            p99_ms: Some(p99_ms),
            ..Row::default()
        }
    }

    fn screen() -> Screen {
        let mut evil = row("bad\x1b[2Jname", 1.0, 1.0);
        evil.enabled = false;
        Screen {
            plugins: vec![row("echo", 5.0, 0.2), row("hash", 50.0, 3.0), evil],
            ..Screen::default()
        }
    }

    /// The rendered lines of `view` over `screen`.
    fn render(view: &View, screen: &Screen) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(120, 8)).unwrap();
        terminal.draw(|f| view.draw(f, screen)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect()
    }

    fn order(lines: &[String]) -> Vec<String> {
        // Between the summary and header lines and the footer line.
        lines[2..lines.len() - 1]
            .iter()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    #[test]
    fn rows_sort_by_the_chosen_column_and_reverse() {
        let s = screen();
        let mut view = View::default();
        let lines = render(&view, &s);
        assert!(lines[1].contains("CALLS/S▼"), "{lines:#?}");
        assert_eq!(order(&lines)[..2], ["hash", "echo"]);
        view.key(Key::Char('n'), &s);
        assert_eq!(order(&render(&view, &s))[..2], ["bad\\x1b[2Jname", "echo"]);
        view.key(Key::Char('r'), &s);
        assert_eq!(order(&render(&view, &s))[0], "hash");
        view.key(Key::Char('l'), &s);
        let lines = render(&view, &s);
        assert!(lines[1].contains("P99▼"));
        assert!(lines[2].contains("3.000ms"), "{lines:#?}");
    }

    #[test]
    fn names_are_escaped_and_disabled_plugins_say_so() {
        let lines = render(&View::default(), &screen());
        let evil = lines.iter().find(|l| l.contains("bad")).unwrap();
        assert!(
            evil.contains("bad\\x1b[2Jname") && evil.contains("disabled"),
            "{evil}"
        );
        assert!(!lines.concat().contains('\x1b'));
    }

    #[test]
    fn filter_select_and_toggle() {
        let s = screen();
        let mut view = View::default();
        assert_eq!(
            view.key(Key::Char('+'), &s),
            Action::None,
            "nothing selected yet"
        );
        for c in "/ech".chars() {
            view.key(Key::Char(c), &s);
        }
        view.key(Key::Enter, &s);
        assert_eq!(order(&render(&view, &s)), ["echo"]);
        view.key(Key::Down, &s);
        assert_eq!(view.selected.as_deref(), Some("echo"));
        assert_eq!(
            view.key(Key::Char('-'), &s),
            Action::Toggle("echo".into(), false)
        );
        assert_eq!(view.key(Key::Char('q'), &s), Action::Quit);
    }
}
