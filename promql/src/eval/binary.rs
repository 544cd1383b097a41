//! Binary operators: scalar/vector arithmetic and comparisons, vector matching
//! (`on`/`ignoring`, `group_left`/`group_right`) and set operators.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::*;
use promql_parser::parser::{BinaryExpr, Expr, LabelModifier, VectorMatchCardinality};
use strata_tsdb::labels::{Labels, METRIC_NAME};

use std::cell::RefCell;

use super::{anno, exec, Annotations, Ctx, Evaluator, Out, Result, Series, Val};
use crate::FloatHistogram;

impl Evaluator<'_> {
    pub(super) fn eval_binary(&mut self, b: &BinaryExpr, ctx: Ctx) -> Result<Val> {
        let op = b.op.id();
        let return_bool = b.modifier.as_ref().map(|m| m.return_bool).unwrap_or(false);
        if let Some(m) = &b.modifier {
            if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                return exec("fill modifiers are not supported");
            }
        }
        let lhs = self.eval(&b.lhs, ctx)?;
        let rhs = self.eval(&b.rhs, ctx)?;
        let is_cmp = matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE);
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let v = l
                    .iter()
                    .zip(r.iter())
                    .map(|(&x, &y)| {
                        let (v, keep) = elem_binop(op, x, y);
                        if is_cmp {
                            if keep {
                                1.0
                            } else {
                                0.0
                            }
                        } else {
                            v
                        }
                    })
                    .collect();
                Ok(Val::Scalar(v))
            }
            (Val::Vector(mut v), Val::Scalar(s)) | (Val::Scalar(s), Val::Vector(mut v))
                if !matches!(op, T_LAND | T_LOR | T_LUNLESS) =>
            {
                let swap = is_scalar_expr(&b.lhs);
                for ser in &mut v {
                    if !is_cmp || return_bool {
                        ser.drop_name = true;
                    }
                    ser.pts.retain_mut(|p| {
                        let i = ((p.0 - ctx.start) / ctx.step) as usize;
                        let (l, r) = if swap { (s[i], p.1) } else { (p.1, s[i]) };
                        let (mut val, keep) = elem_binop(op, l, r);
                        if is_cmp && swap {
                            val = r;
                        }
                        if return_bool {
                            p.1 = if keep { 1.0 } else { 0.0 };
                            true
                        } else if !keep {
                            false
                        } else {
                            p.1 = val;
                            true
                        }
                    });
                }
                for ser in &mut v {
                    if ser.hists.is_empty() {
                        continue;
                    }
                    let mut bools = false;
                    for (t, h) in std::mem::take(&mut ser.hists) {
                        let i = ((t - ctx.start) / ctx.step) as usize;
                        let (l, r) = if swap {
                            (Sv::F(s[i]), Sv::H(&h))
                        } else {
                            (Sv::H(&h), Sv::F(s[i]))
                        };
                        match Sv::apply(op, l, r, return_bool, &self.annos) {
                            Some(SvRes::H(h)) => ser.hists.push((t, h)),
                            Some(SvRes::F(x)) => {
                                ser.pts.push((t, x));
                                bools = true;
                            }
                            None => {}
                        }
                    }
                    if bools {
                        ser.pts.sort_by_key(|p| p.0);
                    }
                }
                v.retain(|s| !s.is_empty());
                Ok(Val::Vector(v))
            }
            (Val::Vector(l), Val::Vector(r)) => {
                if l.iter().chain(r.iter()).all(|s| s.hists.is_empty()) {
                    self.vector_binop::<f64>(b, op, return_bool, &l, &r, ctx)
                } else {
                    self.vector_binop::<Sv<'_>>(b, op, return_bool, &l, &r, ctx)
                }
            }
            _ => exec("invalid operand types for binary operation"),
        }
    }

    /// Vector-vector operations, generic over the sample type: float-only operands
    /// take the `f64` instance, operands with histograms the [`Sv`] one.
    fn vector_binop<'s, S: Elem<'s>>(
        &mut self,
        b: &BinaryExpr,
        op: TokenId,
        return_bool: bool,
        lhs: &'s [Series],
        rhs: &'s [Series],
        ctx: Ctx,
    ) -> Result<Val> {
        let (on, names): (bool, Vec<String>) =
            match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                None => (false, vec![]),
            };
        let card = b
            .modifier
            .as_ref()
            .map(|m| m.card.clone())
            .unwrap_or(VectorMatchCardinality::OneToOne);
        let sig = |l: &Labels| -> String {
            let mut s = String::new();
            for lab in l.iter() {
                let inc = if on {
                    names.iter().any(|n| **n == *lab.name)
                } else {
                    &*lab.name != METRIC_NAME && !names.iter().any(|n| **n == *lab.name)
                };
                if inc {
                    s.push_str(&lab.name);
                    s.push('\u{ff}');
                    s.push_str(&lab.value);
                    s.push('\u{ff}');
                }
            }
            s
        };
        let lsig: Vec<String> = lhs.iter().map(|s| sig(&s.labels)).collect();
        let rsig: Vec<String> = rhs.iter().map(|s| sig(&s.labels)).collect();
        let n = ctx.n();
        // per-step sample lists
        let lsteps = S::step_lists(lhs, ctx);
        let rsteps = S::step_lists(rhs, ctx);
        let mut out = Out::default();

        if matches!(op, T_LAND | T_LOR | T_LUNLESS) {
            let mut lslot: Vec<Option<usize>> = vec![None; lhs.len()];
            let mut rslot: Vec<Option<usize>> = vec![None; rhs.len()];
            for i in 0..n {
                self.check_time()?;
                let t = ctx.ts(i);
                match op {
                    T_LAND | T_LUNLESS => {
                        let rs: HashSet<&str> =
                            rsteps[i].iter().map(|&(si, _)| rsig[si].as_str()).collect();
                        for &(si, x) in &lsteps[i] {
                            let found = rs.contains(lsig[si].as_str());
                            if found == (op == T_LAND) {
                                let slot = *lslot[si].get_or_insert_with(|| {
                                    out.slot(lhs[si].labels.clone(), lhs[si].drop_name)
                                });
                                x.push(&mut out, slot, t)?;
                            }
                        }
                    }
                    _ => {
                        let mut ls: HashSet<&str> = HashSet::new();
                        for &(si, x) in &lsteps[i] {
                            ls.insert(lsig[si].as_str());
                            let slot = *lslot[si].get_or_insert_with(|| {
                                out.slot(lhs[si].labels.clone(), lhs[si].drop_name)
                            });
                            x.push(&mut out, slot, t)?;
                        }
                        for &(si, x) in &rsteps[i] {
                            if ls.contains(rsig[si].as_str()) {
                                continue;
                            }
                            let slot = *rslot[si].get_or_insert_with(|| {
                                out.slot(rhs[si].labels.clone(), rhs[si].drop_name)
                            });
                            x.push(&mut out, slot, t)?;
                        }
                    }
                }
            }
            let res = out.finish();
            self.check_series(&res)?;
            return Ok(Val::Vector(res));
        }

        let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
        let include: Option<Vec<String>> = match &card {
            VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => {
                Some(l.labels.clone())
            }
            _ => None,
        };
        let one_to_one = include.is_none();
        let (many, one, msig, osig, msteps, osteps) = if one_to_many {
            (rhs, lhs, &rsig, &lsig, &rsteps, &lsteps)
        } else {
            (lhs, rhs, &lsig, &rsig, &lsteps, &rsteps)
        };
        let drop_for_op =
            return_bool || !matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE);
        let mut pair_slot: HashMap<(usize, usize), usize> = HashMap::new();
        for i in 0..n {
            self.check_time()?;
            let t = ctx.ts(i);
            if msteps[i].is_empty() || osteps[i].is_empty() {
                continue;
            }
            let mut omap: HashMap<&str, (usize, S)> = HashMap::new();
            for &(si, x) in &osteps[i] {
                if let Some(&(dup, _)) = omap.get(osig[si].as_str()) {
                    let side = if one_to_many { "left" } else { "right" };
                    let ml = match_labels(&one[si].labels, on, &names);
                    let (a, b) = if one[si].labels <= one[dup].labels {
                        (si, dup)
                    } else {
                        (dup, si)
                    };
                    return exec(format!(
                        "found duplicate series for the match group {} on the {} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                        ml, side, one[a].labels, one[b].labels
                    ));
                }
                omap.insert(osig[si].as_str(), (si, x));
            }
            let mut matched: HashMap<&str, HashSet<usize>> = HashMap::new();
            for &(mi, mv) in &msteps[i] {
                let Some(&(oi, ov)) = omap.get(msig[mi].as_str()) else {
                    continue;
                };
                if one_to_one {
                    let set = matched.entry(msig[mi].as_str()).or_default();
                    if !set.is_empty() {
                        return exec("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)");
                    }
                    set.insert(usize::MAX);
                }
                let (fl, fr) = if one_to_many { (ov, mv) } else { (mv, ov) };
                let Some(val) = S::apply(op, fl, fr, return_bool, &self.annos) else {
                    continue;
                };
                let slot = match pair_slot.get(&(mi, oi)) {
                    Some(&s) => s,
                    None => {
                        let ml = &many[mi].labels;
                        let mut l = ml.clone();
                        if one_to_one {
                            if on {
                                let keep: Vec<(&str, &str)> = ml
                                    .iter()
                                    .filter(|x| names.iter().any(|n| **n == *x.name))
                                    .map(|x| (&*x.name, &*x.value))
                                    .collect();
                                l = Labels::from_pairs(keep);
                            } else {
                                let ex: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
                                l = l.without(&ex);
                            }
                        }
                        if let Some(inc) = &include {
                            for ln in inc {
                                let v = one[oi].labels.get(ln).unwrap_or("");
                                l = l.with(ln, v);
                            }
                        }
                        let mut drop =
                            (drop_for_op || many[mi].drop_name) && l.get(METRIC_NAME).is_some();
                        if drop && !self.delayed_names {
                            // Gone before the match checks below, as in Prometheus's
                            // `resultMetric`.
                            l = l.without(&[METRIC_NAME]);
                            drop = false;
                        }
                        let s = out.slot(l, drop);
                        pair_slot.insert((mi, oi), s);
                        s
                    }
                };
                let set = matched.entry(msig[mi].as_str()).or_default();
                if !one_to_one && !set.insert(slot) {
                    return exec(
                        "multiple matches for labels: grouping labels must ensure unique matches",
                    );
                }
                S::push_result(&mut out, slot, t, val)?;
            }
        }
        let res = out.finish();
        self.check_series(&res)?;
        Ok(Val::Vector(res))
    }
}

/// A sample of a binary operation's operand: `f64` for float-only operands, [`Sv`]
/// when histograms are involved.
pub(super) trait Elem<'s>: Copy + Sized {
    type Res;
    /// Per step, the `(series index, sample)` present.
    fn step_lists(series: &'s [Series], ctx: Ctx) -> Vec<Vec<(usize, Self)>>;
    /// `l op r`, or `None` when the pair is filtered out (or incompatible).
    fn apply(
        op: TokenId,
        l: Self,
        r: Self,
        return_bool: bool,
        annos: &RefCell<Annotations>,
    ) -> Option<Self::Res>;
    fn push(self, out: &mut Out, slot: usize, t: i64) -> Result<()>;
    fn push_result(out: &mut Out, slot: usize, t: i64, r: Self::Res) -> Result<()>;
}

impl<'s> Elem<'s> for f64 {
    type Res = f64;
    fn step_lists(series: &'s [Series], ctx: Ctx) -> Vec<Vec<(usize, f64)>> {
        let mut v = vec![Vec::new(); ctx.n()];
        for (si, s) in series.iter().enumerate() {
            for &(t, x) in &s.pts {
                v[((t - ctx.start) / ctx.step) as usize].push((si, x));
            }
        }
        v
    }
    #[inline]
    fn apply(
        op: TokenId,
        l: f64,
        r: f64,
        return_bool: bool,
        _annos: &RefCell<Annotations>,
    ) -> Option<f64> {
        let (val, keep) = elem_binop(op, l, r);
        if return_bool {
            Some(if keep { 1.0 } else { 0.0 })
        } else {
            keep.then_some(val)
        }
    }
    #[inline]
    fn push(self, out: &mut Out, slot: usize, t: i64) -> Result<()> {
        out.push_at(slot, t, self)
    }
    #[inline]
    fn push_result(out: &mut Out, slot: usize, t: i64, r: f64) -> Result<()> {
        out.push_at(slot, t, r)
    }
}

/// A float or a histogram sample of an operand.
#[derive(Clone, Copy)]
pub(super) enum Sv<'s> {
    F(f64),
    H(&'s FloatHistogram),
}

/// The result of an operation on [`Sv`]s.
pub(super) enum SvRes {
    F(f64),
    H(FloatHistogram),
}

impl<'s> Elem<'s> for Sv<'s> {
    type Res = SvRes;
    fn step_lists(series: &'s [Series], ctx: Ctx) -> Vec<Vec<(usize, Sv<'s>)>> {
        let mut v = vec![Vec::new(); ctx.n()];
        for (si, s) in series.iter().enumerate() {
            for &(t, x) in &s.pts {
                v[((t - ctx.start) / ctx.step) as usize].push((si, Sv::F(x)));
            }
            for (t, h) in &s.hists {
                v[((t - ctx.start) / ctx.step) as usize].push((si, Sv::H(h)));
            }
        }
        v
    }
    fn apply(
        op: TokenId,
        l: Sv<'s>,
        r: Sv<'s>,
        return_bool: bool,
        annos: &RefCell<Annotations>,
    ) -> Option<SvRes> {
        let (res, keep) = match hist_binop(op, l, r) {
            Ok(x) => x,
            Err(note) => {
                let mut a = annos.borrow_mut();
                match note {
                    Note::Incompatible => {
                        let kind = |x: &Sv<'_>| match x {
                            Sv::F(_) => "float",
                            Sv::H(_) => "histogram",
                        };
                        let op = promql_parser::parser::token::TokenType::new(op).to_string();
                        a.info(anno::incompatible_types(&op, kind(&l), kind(&r)));
                    }
                    Note::Schemas => a.warn(anno::mixed_exponential_custom("")),
                }
                return None;
            }
        };
        if let (Sv::H(_), Sv::H(_), T_ADD | T_SUB) = (l, r, op) {
            let what = if op == T_ADD {
                "addition"
            } else {
                "subtraction"
            };
            if let (Sv::H(a), Sv::H(b)) = (l, r) {
                let info = crate::histogram::combine(a, b, op == T_SUB)
                    .map(|x| x.1)
                    .unwrap_or_default();
                let mut an = annos.borrow_mut();
                if info.counter_reset_collision {
                    an.warn(anno::counter_reset_collision(what));
                }
                if info.custom_reconciled {
                    an.info(anno::mismatched_custom_buckets(what));
                }
            }
        }
        if return_bool {
            return Some(SvRes::F(if keep { 1.0 } else { 0.0 }));
        }
        keep.then_some(res)
    }
    fn push(self, out: &mut Out, slot: usize, t: i64) -> Result<()> {
        match self {
            Sv::F(x) => out.push_at(slot, t, x),
            Sv::H(h) => out.push_hist_at(slot, t, h.clone()),
        }
    }
    fn push_result(out: &mut Out, slot: usize, t: i64, r: SvRes) -> Result<()> {
        match r {
            SvRes::F(x) => out.push_at(slot, t, x),
            SvRes::H(h) => out.push_hist_at(slot, t, h),
        }
    }
}

/// Prometheus's `vectorElemBinop` with histograms: (result, keep); `None` for
/// operations not defined on the operand types (the pair is dropped).
/// Why [`hist_binop`] gave no result.
pub(super) enum Note {
    /// The operator is not defined on these sample types.
    Incompatible,
    /// Histograms with exponential and custom buckets.
    Schemas,
}

pub(super) fn hist_binop(
    op: TokenId,
    l: Sv<'_>,
    r: Sv<'_>,
) -> std::result::Result<(SvRes, bool), Note> {
    use crate::histogram as hist;
    match (l, r) {
        (Sv::F(a), Sv::F(b)) => {
            let (v, keep) = elem_binop(op, a, b);
            Ok((SvRes::F(v), keep))
        }
        (Sv::F(f), Sv::H(h)) | (Sv::H(h), Sv::F(f)) if op == T_MUL => {
            let mut h = h.clone();
            hist::mul(&mut h, f);
            Ok((SvRes::H(hist::compact(&h)), true))
        }
        (Sv::H(h), Sv::F(f)) if op == T_DIV => {
            let mut h = h.clone();
            hist::div(&mut h, f);
            Ok((SvRes::H(hist::compact(&h)), true))
        }
        (Sv::H(a), Sv::H(b)) => match op {
            T_ADD | T_SUB => {
                let (mut h, _) = hist::combine(a, b, op == T_SUB).map_err(|_| Note::Schemas)?;
                if op == T_SUB {
                    h.counter_reset_hint = strata_tsdb::histogram::CounterResetHint::Gauge;
                }
                Ok((SvRes::H(hist::compact(&h)), true))
            }
            T_EQLC => Ok((SvRes::H(a.clone()), hist_equals(a, b))),
            T_NEQ => Ok((SvRes::H(a.clone()), !hist_equals(a, b))),
            _ => Err(Note::Incompatible),
        },
        _ => Err(Note::Incompatible),
    }
}

/// Prometheus's `FloatHistogram.Equals` on compacted histograms (bit-exact values).
pub(super) fn hist_equals(a: &FloatHistogram, b: &FloatHistogram) -> bool {
    let (a, b) = (crate::histogram::compact(a), crate::histogram::compact(b));
    let bits = |x: &[f64], y: &[f64]| {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
    };
    a.schema == b.schema
        && a.zero_threshold.to_bits() == b.zero_threshold.to_bits()
        && a.zero_count.to_bits() == b.zero_count.to_bits()
        && a.count.to_bits() == b.count.to_bits()
        && a.sum.to_bits() == b.sum.to_bits()
        && a.positive_spans == b.positive_spans
        && a.negative_spans == b.negative_spans
        && bits(&a.positive_buckets, &b.positive_buckets)
        && bits(&a.negative_buckets, &b.negative_buckets)
        && a.custom_values == b.custom_values
}

fn match_labels(l: &Labels, on: bool, names: &[String]) -> Labels {
    let pairs: Vec<(&str, &str)> = l
        .iter()
        .filter(|x| {
            let listed = names.iter().any(|n| **n == *x.name);
            if on {
                listed
            } else {
                !listed && &*x.name != METRIC_NAME
            }
        })
        .map(|x| (&*x.name, &*x.value))
        .collect();
    Labels::from_pairs(pairs)
}

fn is_scalar_expr(e: &Expr) -> bool {
    use promql_parser::parser::value::ValueType;
    e.value_type() == ValueType::Scalar
}

/// Prometheus's `vectorElemBinop` for floats: (value, keep).
pub fn elem_binop(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_POW => (l.powf(r), true),
        T_MOD => (l % r, true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}
