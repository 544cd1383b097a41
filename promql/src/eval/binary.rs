//! Binary operators: scalar/vector arithmetic and comparisons, vector matching
//! (`on`/`ignoring`, `group_left`/`group_right`) and set operators.

use std::collections::{HashMap, HashSet};

use promql_parser::parser::token::*;
use promql_parser::parser::{BinaryExpr, Expr, LabelModifier, VectorMatchCardinality};
use strata_tsdb::labels::{Labels, METRIC_NAME};

use super::{exec, Ctx, Evaluator, Out, Result, Series, Val};

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
                v.retain(|s| !s.pts.is_empty());
                Ok(Val::Vector(v))
            }
            (Val::Vector(l), Val::Vector(r)) => self.vector_binop(b, op, return_bool, l, r, ctx),
            _ => exec("invalid operand types for binary operation"),
        }
    }

    fn vector_binop(
        &mut self,
        b: &BinaryExpr,
        op: TokenId,
        return_bool: bool,
        lhs: Vec<Series>,
        rhs: Vec<Series>,
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
        let lsteps = step_lists(&lhs, ctx);
        let rsteps = step_lists(&rhs, ctx);
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
                                out.push_at(slot, t, x)?;
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
                            out.push_at(slot, t, x)?;
                        }
                        for &(si, x) in &rsteps[i] {
                            if ls.contains(rsig[si].as_str()) {
                                continue;
                            }
                            let slot = *rslot[si].get_or_insert_with(|| {
                                out.slot(rhs[si].labels.clone(), rhs[si].drop_name)
                            });
                            out.push_at(slot, t, x)?;
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
            (&rhs, &lhs, &rsig, &lsig, &rsteps, &lsteps)
        } else {
            (&lhs, &rhs, &lsig, &rsig, &lsteps, &rsteps)
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
            let mut omap: HashMap<&str, (usize, f64)> = HashMap::new();
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
                let (mut val, keep) = elem_binop(op, fl, fr);
                if return_bool {
                    val = if keep { 1.0 } else { 0.0 };
                } else if !keep {
                    continue;
                }
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
                        let drop =
                            (drop_for_op || many[mi].drop_name) && l.get(METRIC_NAME).is_some();
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
                out.push_at(slot, t, val)?;
            }
        }
        let res = out.finish();
        self.check_series(&res)?;
        Ok(Val::Vector(res))
    }
}

fn step_lists(series: &[Series], ctx: Ctx) -> Vec<Vec<(usize, f64)>> {
    let mut v = vec![Vec::new(); ctx.n()];
    for (si, s) in series.iter().enumerate() {
        for &(t, x) in &s.pts {
            v[((t - ctx.start) / ctx.step) as usize].push((si, x));
        }
    }
    v
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
