//! A process and all its descendants, found by walking children lists
//! (`/proc/<pid>/task/<tid>/children`) while each process found is stopped,
//! so none of them can fork a child the walk would miss or die and hand its
//! children to the container's init before they are seen.

use std::collections::BTreeSet;

/// Most processes one walk collects: a fork bomb is stopped as it is
/// found, so the walk converges; the bound only keeps memory finite.
pub const MAX_PROCESSES: usize = 65536;

/// Collects `root` and its descendants. `stop` is called once for each
/// process as it is first seen (before its children are read);
/// `children` lists a process's current children. Repeats until a pass
/// finds nothing new, so a child forked between a read and a stop is
/// found on the next pass.
pub fn collect(
    root: i32,
    mut stop: impl FnMut(i32),
    children: impl Fn(i32) -> Vec<i32>,
) -> BTreeSet<i32> {
    let mut seen = BTreeSet::new();
    let mut frontier = vec![root];
    loop {
        let mut fresh = Vec::new();
        for p in frontier.drain(..) {
            if seen.len() >= MAX_PROCESSES {
                return seen;
            }
            if p > 0 && seen.insert(p) {
                stop(p);
                fresh.push(p);
            }
        }
        if fresh.is_empty() {
            // One more pass over everything seen: children forked by a
            // process after its list was read but before it stopped.
            let late: Vec<i32> = seen
                .iter()
                .flat_map(|p| children(*p))
                .filter(|c| *c > 0 && !seen.contains(c))
                .collect();
            if late.is_empty() {
                return seen;
            }
            frontier = late;
            continue;
        }
        frontier = fresh.iter().flat_map(|p| children(*p)).collect();
    }
}

/// The children a process's threads list, from procfs (empty when it is
/// gone).
pub fn proc_children(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// A process's parent pid, from /proc/<pid>/stat (None when it is gone).
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: the
    // fields after its last ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[test]
    fn collects_a_tree_and_children_forked_during_the_walk() {
        // 1 -> 2 -> {3, 4}; 4 -> 5. Process 2 forks 6 after its children
        // were first read (seen on the late pass).
        let tree: RefCell<HashMap<i32, Vec<i32>>> =
            RefCell::new(HashMap::from([(1, vec![2]), (2, vec![3, 4]), (4, vec![5])]));
        let reads = RefCell::new(HashMap::<i32, usize>::new());
        let mut stopped = Vec::new();
        let got = collect(
            1,
            |p| stopped.push(p),
            |p| {
                let mut r = reads.borrow_mut();
                let n = r.entry(p).or_default();
                *n += 1;
                if p == 2 && *n == 1 {
                    let first = tree.borrow()[&2].clone();
                    tree.borrow_mut().get_mut(&2).unwrap().push(6);
                    return first;
                }
                tree.borrow().get(&p).cloned().unwrap_or_default()
            },
        );
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
        stopped.sort();
        assert_eq!(stopped, vec![1, 2, 3, 4, 5, 6], "each stopped once");
    }

    #[test]
    fn cycles_and_bad_pids_end_the_walk() {
        let got = collect(
            1,
            |_| {},
            |p| if p == 1 { vec![1, 0, -3, 2] } else { vec![1] },
        );
        assert_eq!(got.into_iter().collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_huge_tree_is_bounded() {
        let got = collect(1, |_| {}, |p| vec![p * 2, p * 2 + 1]);
        assert_eq!(got.len(), MAX_PROCESSES);
    }

    #[test]
    fn procfs_readers() {
        let me = std::process::id() as i32;
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw()));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(proc_children(me).contains(&(child.id() as i32)));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(parent_of(-1), None);
    }
}
