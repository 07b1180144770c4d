//! Keys to actions. Pure, so that the key map is tested without a terminal.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::Action;

/// The action a key asks for; `editing` is true while the filter is being typed, when letters
/// are text rather than commands.
pub fn action(key: KeyEvent, editing: bool) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    // Raw mode turns Ctrl-C into a key instead of SIGINT: it quits like q.
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(key.code, KeyCode::Char('c' | 'd')).then_some(Action::Quit);
    }
    if editing {
        return match key.code {
            KeyCode::Enter => Some(Action::FilterApply),
            KeyCode::Esc => Some(Action::Back),
            KeyCode::Backspace => Some(Action::FilterBackspace),
            KeyCode::Char(c) => Some(Action::FilterChar(c)),
            _ => None,
        };
    }
    match key.code {
        KeyCode::Char('q') => Some(Action::Quit),
        KeyCode::Up | KeyCode::Char('k') => Some(Action::Up),
        KeyCode::Down | KeyCode::Char('j') => Some(Action::Down),
        KeyCode::Tab | KeyCode::BackTab | KeyCode::Left | KeyCode::Right => {
            Some(Action::SwitchPane)
        }
        KeyCode::Enter => Some(Action::Open),
        KeyCode::Esc | KeyCode::Backspace => Some(Action::Back),
        KeyCode::Char('p') | KeyCode::Char(' ') => Some(Action::TogglePause),
        KeyCode::Char('s') => Some(Action::CycleSort),
        KeyCode::Char('/') => Some(Action::StartFilter),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn commands() {
        assert_eq!(action(key(KeyCode::Char('q')), false), Some(Action::Quit));
        assert_eq!(action(key(KeyCode::Up), false), Some(Action::Up));
        assert_eq!(action(key(KeyCode::Down), false), Some(Action::Down));
        assert_eq!(
            action(key(KeyCode::Char('p')), false),
            Some(Action::TogglePause)
        );
        assert_eq!(
            action(key(KeyCode::Char('/')), false),
            Some(Action::StartFilter)
        );
        assert_eq!(
            action(key(KeyCode::Char('s')), false),
            Some(Action::CycleSort)
        );
        assert_eq!(action(key(KeyCode::Enter), false), Some(Action::Open));
        assert_eq!(action(key(KeyCode::Tab), false), Some(Action::SwitchPane));
        assert_eq!(action(key(KeyCode::F(5)), false), None);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(action(ctrl_c, false), Some(Action::Quit));
        assert_eq!(action(ctrl_c, true), Some(Action::Quit));
    }

    #[test]
    fn letters_are_text_while_filtering() {
        assert_eq!(
            action(key(KeyCode::Char('q')), true),
            Some(Action::FilterChar('q'))
        );
        assert_eq!(
            action(key(KeyCode::Char('s')), true),
            Some(Action::FilterChar('s'))
        );
        assert_eq!(action(key(KeyCode::Enter), true), Some(Action::FilterApply));
        assert_eq!(action(key(KeyCode::Esc), true), Some(Action::Back));
        assert_eq!(
            action(key(KeyCode::Backspace), true),
            Some(Action::FilterBackspace)
        );
    }
}
