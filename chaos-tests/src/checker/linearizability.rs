//! A linearizability checker: does a recorded concurrent history have a linearization, an order
//! of its operations that respects real time and that a sequential specification accepts?
//!
//! What: [`check`] runs the Wing–Gong search as porcupine does, generic over a sequential
//! [`Model`]. It walks, depth first and with an explicit stack, over "which operation takes
//! effect next": an operation may go next iff it is not placed yet and was invoked no later than
//! the earliest completion among the determinate operations not placed yet. Configurations
//! (placed set, model state) already explored are remembered and never explored again.
//! [`check_partitioned`] uses P-compositionality: a history over independent keys is
//! linearizable iff each key's sub-history is, so each key is checked alone, which keeps the
//! exponential part of the search per key.
//!
//! Why: the chaos suite records what clients read and wrote of task state (per task: its state
//! transitions, reads of it) while members crash and partitions come and go, and must decide
//! afterwards whether every answer a client got is explained by one atomic object per key.
//! Timeouts are part of that: an operation whose answer never arrived is *indeterminate*
//! (`complete == None`); it may have taken effect at any instant after its invocation, or never.
//! The search may place it anywhere after its invocation or leave it out, and the model is told
//! its answer is unknown (`output: None` in [`Model::step`]).
//!
//! Caveats:
//! - The problem is NP-complete: the worst case is exponential in the number of operations that
//!   overlap, and every indeterminate operation overlaps everything after it. The `budget` caps
//!   the [`Model::step`] calls; past it the answer is [`Verdict::Unknown`], not a guess.
//! - Memory: every configuration reached is remembered until the check returns, each with its
//!   placed set (one bit per operation of the history) and its state, so a check can hold up to
//!   `budget` of them: set the budget with that in mind for long histories.
//! - An indeterminate operation that leaves the state as it is (a read that timed out) is never
//!   placed, since it constrains nothing; those that change it (writes that timed out) may go
//!   anywhere after their invocation, and each one of them multiplies the configurations to
//!   explore when the history is *not* linearizable (measured: 2,000 sequential operations plus
//!   10 timed-out writes and a stale read take about 40 s, optimized).
//! - Instants are compared as recorded: operations whose times are equal count as overlapping
//!   (the lenient choice, so a coarse clock cannot fake a violation). Times from different
//!   machines are only as comparable as their clocks.
//! - The model must be deterministic: one state after each (state, input, answer), and one
//!   after an unknown answer (as if the operation took effect with whatever answer the
//!   specification gives from that state).

use std::collections::{BTreeMap, HashSet};
use std::fmt::{Debug, Write as _};
use std::hash::Hash;

/// A sequential specification: the object's states and which answers each operation may get.
pub trait Model {
    /// The object's state; remembered to prune configurations already explored.
    type State: Clone + Eq + Hash + Debug;
    /// What a client asked.
    type Input: Debug;
    /// What a client was answered.
    type Output: Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` takes effect from `state` answered with `output`, or `None` if
    /// that answer is impossible from `state`. `output` is `None` when the answer is unknown
    /// (the operation timed out or its answer was not recorded): the step must then return the
    /// state as if the operation took effect, whatever it would have answered.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// One client operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// The client that issued it (only for explanations: real-time order alone constrains it).
    pub client: u64,
    /// When it was invoked, in nanoseconds on the history's clock.
    pub invoke: u64,
    /// When its answer arrived; `None` if it never did (indeterminate: it may take effect at any
    /// instant after `invoke`, or never).
    pub complete: Option<u64>,
    /// What was asked.
    pub input: I,
    /// What was answered; `None` when unknown, as for every indeterminate operation.
    pub output: Option<O>,
}

/// What [`check`] concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Some order of the operations respects real time and the model.
    Linearizable,
    /// No such order exists (or the history is malformed: an operation completing before its
    /// invocation).
    Violation {
        /// The longest linearizable prefix found, the state after it, and the operations that
        /// could go next there but could not be placed, with their times.
        detail: String,
    },
    /// The search budget ran out before an answer.
    Unknown {
        /// The [`Model::step`] calls made.
        explored: u64,
    },
}

impl Verdict {
    /// Whether the history was found linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Checks that `history` is linearizable with respect to `model`, making at most `budget`
/// [`Model::step`] calls. Operations are referred to by their index in `history`.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    budget: u64,
) -> Verdict {
    if let Some(detail) = malformed(history) {
        return Verdict::Violation { detail };
    }
    Search::new(model, history, budget).run()
}

/// Checks each key's operations alone (the history's order kept within a key), with `budget`
/// per key, and returns the keys whose sub-history is not [`Verdict::Linearizable`], in key
/// order: empty when every key is.
pub fn check_partitioned<M, K>(
    model: &M,
    history: impl IntoIterator<Item = (K, Operation<M::Input, M::Output>)>,
    budget: u64,
) -> Vec<(K, Verdict)>
where
    M: Model,
    K: Ord,
{
    let mut by_key: BTreeMap<K, Vec<OperationOf<M>>> = BTreeMap::new();
    for (key, op) in history {
        by_key.entry(key).or_default().push(op);
    }
    by_key
        .into_iter()
        .filter_map(|(key, ops)| {
            let verdict = check(model, &ops, budget);
            (!verdict.is_linearizable()).then_some((key, verdict))
        })
        .collect()
}

/// An operation of model `M`.
type OperationOf<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// The first operation that completes before it is invoked, explained.
fn malformed<I: Debug, O: Debug>(history: &[Operation<I, O>]) -> Option<String> {
    let (index, op) = history
        .iter()
        .enumerate()
        .find(|(_, op)| op.complete.is_some_and(|c| c < op.invoke))?;
    Some(format!(
        "malformed history: operation completes before it is invoked: {}",
        describe(index, op)
    ))
}

/// One operation on one line: index, client, `[invoke, complete]`, input and answer.
fn describe<I: Debug, O: Debug>(index: usize, op: &Operation<I, O>) -> String {
    let complete = op
        .complete
        .map_or_else(|| "never".to_owned(), |c| c.to_string());
    let output = op
        .output
        .as_ref()
        .map_or_else(|| "?".to_owned(), |o| format!("{o:?}"));
    format!(
        "#{index} client {} [{}, {}] {:?} -> {}",
        op.client, op.invoke, complete, op.input, output
    )
}

/// A set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    /// An empty set of indices below `len`.
    fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }

    /// Puts `i` in the set (`on`) or takes it out.
    fn set(&mut self, i: usize, on: bool) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if let Some(w) = self.0.get_mut(word) {
            if on {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }
}

/// The list head (and end): a sentinel node.
const HEAD: usize = 0;

/// The history's invocations and completions in time order (invocations first at equal
/// instants), on a circular doubly linked list from which placed operations are lifted out and
/// put back, in reverse order, on backtracking: Knuth's dancing links, as porcupine does. The
/// operations that may go next are the invocations before the first completion on the list.
struct Events {
    /// Per node: its operation.
    op: Vec<usize>,
    /// Per node: whether it is a completion (else an invocation).
    is_return: Vec<bool>,
    /// Per node: the next node on the list.
    next: Vec<usize>,
    /// Per node: the previous node on the list.
    prev: Vec<usize>,
    /// Per operation: its invocation node.
    call: Vec<usize>,
    /// Per operation: its completion node, if it completed.
    ret: Vec<Option<usize>>,
}

impl Events {
    fn new<I, O>(history: &[Operation<I, O>]) -> Events {
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(history.len() * 2);
        for (i, op) in history.iter().enumerate() {
            order.push((op.invoke, false, i));
            if let Some(complete) = op.complete {
                order.push((complete, true, i));
            }
        }
        order.sort_unstable();
        let nodes = order.len() + 1;
        let mut events = Events {
            op: vec![usize::MAX; nodes],
            is_return: vec![false; nodes],
            next: (0..nodes).map(|n| (n + 1) % nodes).collect(),
            prev: (0..nodes).map(|n| (n + nodes - 1) % nodes).collect(),
            call: vec![HEAD; history.len()],
            ret: vec![None; history.len()],
        };
        for (position, &(_, is_return, op)) in order.iter().enumerate() {
            let node = position + 1;
            events.op[node] = op;
            events.is_return[node] = is_return;
            if is_return {
                events.ret[op] = Some(node);
            } else {
                events.call[op] = node;
            }
        }
        events
    }

    /// Unlinks `node`, which keeps its own links for [`Events::restore`].
    fn remove(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Links `node` back where it was; valid in reverse order of [`Events::remove`].
    fn restore(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }

    /// Takes operation `op`'s nodes off the list.
    fn lift(&mut self, op: usize) {
        self.remove(self.call[op]);
        if let Some(ret) = self.ret[op] {
            self.remove(ret);
        }
    }

    /// Puts operation `op`'s nodes back; only valid in reverse order of [`Events::lift`].
    fn unlift(&mut self, op: usize) {
        if let Some(ret) = self.ret[op] {
            self.restore(ret);
        }
        self.restore(self.call[op]);
    }
}

/// What trying one operation as the next one did.
enum Try {
    /// It was placed: the search goes one level deeper.
    Placed,
    /// The model rejected it, or the configuration it leads to was explored already.
    Rejected,
    /// The budget is spent.
    OutOfBudget,
}

/// One run of the Wing–Gong search over one history.
struct Search<'a, M: Model> {
    model: &'a M,
    history: &'a [OperationOf<M>],
    events: Events,
    budget: u64,
    /// [`Model::step`] calls made.
    explored: u64,
    /// The operations placed so far, as a set.
    placed: Bits,
    /// The state after the placed operations.
    state: M::State,
    /// The placed operations in order, each with the state before it.
    stack: Vec<(usize, M::State)>,
    /// Configurations reached before: (placed set, state).
    seen: HashSet<(Bits, M::State)>,
    /// Determinate operations not placed yet; the search succeeds when none is left.
    determinate_left: usize,
    /// The longest prefix placed before a dead end, and the state after it.
    longest: (Vec<usize>, M::State),
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, history: &'a [OperationOf<M>], budget: u64) -> Self {
        let init = model.init();
        Search {
            model,
            history,
            events: Events::new(history),
            budget,
            explored: 0,
            placed: Bits::new(history.len()),
            state: init.clone(),
            stack: Vec::new(),
            seen: HashSet::new(),
            determinate_left: history.iter().filter(|op| op.complete.is_some()).count(),
            longest: (Vec::new(), init),
        }
    }

    /// Depth first over the next operation to place, with `cursor` walking the candidates of
    /// the current level and `stack` holding the levels above.
    fn run(mut self) -> Verdict {
        let mut cursor = self.events.next[HEAD];
        loop {
            if self.determinate_left == 0 {
                return Verdict::Linearizable;
            }
            if cursor != HEAD && !self.events.is_return[cursor] {
                match self.try_place(self.events.op[cursor]) {
                    Try::Placed => cursor = self.events.next[HEAD],
                    Try::Rejected => cursor = self.events.next[cursor],
                    Try::OutOfBudget => {
                        return Verdict::Unknown {
                            explored: self.explored,
                        };
                    }
                }
                continue;
            }
            // No candidate left at this level: undo the last placement, try its successors.
            if self.stack.len() > self.longest.0.len() {
                let prefix = self.stack.iter().map(|(op, _)| *op).collect();
                self.longest = (prefix, self.state.clone());
            }
            let Some((op, before)) = self.stack.pop() else {
                return Verdict::Violation {
                    detail: self.explain(),
                };
            };
            self.events.unlift(op);
            self.placed.set(op, false);
            self.state = before;
            if self.history[op].complete.is_some() {
                self.determinate_left += 1;
            }
            cursor = self.events.next[self.events.call[op]];
        }
    }

    /// Tries `op` as the next operation from the current configuration.
    fn try_place(&mut self, op: usize) -> Try {
        if self.explored >= self.budget {
            return Try::OutOfBudget;
        }
        self.explored += 1;
        let operation = &self.history[op];
        let step = self
            .model
            .step(&self.state, &operation.input, operation.output.as_ref());
        let Some(next) = step else {
            return Try::Rejected;
        };
        // An indeterminate operation that leaves the state as it is need not be placed: the
        // configuration without it allows all that the one with it does (it binds nothing).
        if operation.complete.is_none() && next == self.state {
            return Try::Rejected;
        }
        self.placed.set(op, true);
        if !self.seen.insert((self.placed.clone(), next.clone())) {
            self.placed.set(op, false);
            return Try::Rejected;
        }
        let before = std::mem::replace(&mut self.state, next);
        self.stack.push((op, before));
        self.events.lift(op);
        if operation.complete.is_some() {
            self.determinate_left -= 1;
        }
        Try::Placed
    }

    /// The violation explained from the longest prefix placed: the prefix (its last operations
    /// if long), the state after it, and each operation that could go next there.
    fn explain(&self) -> String {
        const SHOWN: usize = 30;
        let (prefix, state) = &self.longest;
        let mut text = format!(
            "no linearization of {} operations ({} determinate) exists; {} steps explored\n\
             longest linearizable prefix: {} operations\n",
            self.history.len(),
            self.history
                .iter()
                .filter(|op| op.complete.is_some())
                .count(),
            self.explored,
            prefix.len(),
        );
        if prefix.len() > SHOWN {
            let _ = writeln!(text, "  ... {} earlier ones", prefix.len() - SHOWN);
        }
        for &op in &prefix[prefix.len().saturating_sub(SHOWN)..] {
            let _ = writeln!(text, "  {}", describe(op, &self.history[op]));
        }
        let _ = writeln!(text, "state after it: {state:?}");
        text.push_str(&self.stuck_after(prefix, state));
        text
    }

    /// The operations that could go next after `prefix` (reaching `state`), and why each
    /// could not.
    fn stuck_after(&self, prefix: &[usize], state: &M::State) -> String {
        let mut placed = vec![false; self.history.len()];
        for &op in prefix {
            placed[op] = true;
        }
        let unplaced = || (0..self.history.len()).filter(|&i| !placed[i]);
        let deadline = unplaced()
            .filter_map(|i| self.history[i].complete.map(|c| (c, i)))
            .min();
        let mut text = String::new();
        if let Some((at, op)) = deadline {
            let _ = writeln!(
                text,
                "operations that could go next (invoked no later than {at}, when #{op} completed), \
                 none of which could be placed:"
            );
        }
        let bound = deadline.map_or(u64::MAX, |(at, _)| at);
        for i in unplaced().filter(|&i| self.history[i].invoke <= bound) {
            let op = &self.history[i];
            let step = self.model.step(state, &op.input, op.output.as_ref());
            let why = match (step, op.complete) {
                (None, _) => "the model rejects this answer here",
                (Some(_), Some(_)) => "accepted here, but nothing can follow it",
                (Some(_), None) => "indeterminate; placing it here leads nowhere either",
            };
            let _ = writeln!(text, "  {}: {why}", describe(i, op));
        }
        text
    }
}

#[cfg(test)]
mod tests;
