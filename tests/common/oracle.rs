//! The rule-5 oracle: which value a decision's recorded votes should have chosen; and the
//! votes a decision's tally counts, to hold against its recorded votes.

use std::collections::HashMap;

use serde_json::Value;

/// Rule 5 applied to votes in recorded order: the value with the most votes wins; on a
/// tie, the value that reached that count first.
pub fn expected_winner(values_in_order: &[impl AsRef<str>]) -> String {
    // value -> (its votes, the position of the vote that reached that count)
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (position, value) in values_in_order.iter().enumerate() {
        let entry = counts.entry(value.as_ref()).or_default();
        entry.0 += 1;
        entry.1 = position;
    }
    let (winner, _) = counts
        .into_iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then(b.1.1.cmp(&a.1.1)))
        .expect("at least one vote");
    winner.to_owned()
}

/// The votes the tally of `status` (a `system.quorum.status` result) counts, all values
/// together.
pub fn tallied(status: &Value) -> u64 {
    status["tally"]
        .as_object()
        .expect("a status has a tally")
        .values()
        .map(|count| count.as_u64().expect("a tally counts in whole votes"))
        .sum()
}
