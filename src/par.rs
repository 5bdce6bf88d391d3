//! Data parallelism on the cores of the machine, with results in input
//! order, so that output never depends on thread scheduling.

use std::sync::atomic::{AtomicUsize, Ordering};

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Run `f` over `items` from `threads` threads (this one included): each
/// takes the next item until none is left, so items of different cost
/// still keep every core busy. `here` runs on this thread first; when it
/// returns `true`, this thread helps, else no item is handed out any more
/// (items already taken are finished). Returns `here`'s result and the
/// `(index, result)` of every item done. A panic in a helper is resumed.
fn run<T: Sync, R: Send, U>(
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
    threads: usize,
    here: impl FnOnce() -> (U, bool),
) -> (U, Vec<(usize, R)>) {
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let (u, help) = here();
        let mut done = if help {
            work()
        } else {
            next.store(items.len(), Ordering::Relaxed);
            Vec::new()
        };
        for h in helpers {
            done.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        (u, done)
    })
}

/// `items.iter().map(f).collect()`, the calls spread over the available
/// cores (the calling thread works too).
pub(crate) fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = cores().min(items.len());
    if threads < 2 {
        return items.iter().map(f).collect();
    }
    let ((), mut done) = run(items, f, threads, || ((), true));
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Run `first` on this thread while the other cores start on `f` over
/// `items`; when `first` is done, so are they (after the item in hand).
/// Returns `first`'s result and the `(index, result)` of the items done,
/// in no particular order: none at all on a single core.
pub(crate) fn beside<T: Sync, R: Send, U>(
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
    first: impl FnOnce() -> U,
) -> (U, Vec<(usize, R)>) {
    let threads = cores().min(items.len() + 1);
    if threads < 2 {
        return (first(), Vec::new());
    }
    run(items, f, threads, || (first(), false))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_input_order() {
        let items: Vec<u64> = (0..1000).collect();
        let out = super::map(&items, |i| i * 2);
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(super::map(&[] as &[u64], |i| *i).is_empty());
    }

    #[test]
    fn beside_stops_when_first_is_done() {
        let items: Vec<u64> = (0..100).collect();
        let (first, done) = super::beside(&items, |i| i * 2, || 7);
        assert_eq!(first, 7);
        assert!(done.iter().all(|(i, r)| *r == items[*i] * 2));
    }
}
