//! The last `n` keys delivered, with an O(1) membership test (the dedup window is 1,024 deliveries by
//! default: scanning it on every delivery showed in the week's profile).

use std::collections::VecDeque;

use crate::hash::FastMap;

/// The last `capacity` keys pushed, in order, and how often each occurs among them.
#[derive(Debug, Clone, Default)]
pub(super) struct Window {
    order: VecDeque<String>,
    counts: FastMap<String, u32>,
}

impl Window {
    /// True if `key` is among the last keys kept.
    pub(super) fn contains(&self, key: &str) -> bool {
        self.counts.contains_key(key)
    }

    /// Adds `key`, then forgets the oldest keys beyond `capacity`.
    pub(super) fn push(&mut self, key: String, capacity: usize) {
        *self.counts.entry(key.clone()).or_insert(0) += 1;
        self.order.push_back(key);
        while self.order.len() > capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(n) = self.counts.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_exactly_the_last_keys() {
        let mut w = Window::default();
        for k in ["a", "b", "a", "c"] {
            w.push(k.into(), 3);
        }
        // The window is now b, a, c: the first "a" left, the second one is still in.
        assert!(w.contains("a") && w.contains("b") && w.contains("c"));
        w.push("d".into(), 3);
        assert!(!w.contains("b") && w.contains("a"));
        w.push("e".into(), 3);
        assert!(!w.contains("a") && w.contains("c") && w.contains("d") && w.contains("e"));
    }
}
