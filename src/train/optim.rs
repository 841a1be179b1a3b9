//! AdamW and the learning-rate schedule, written out so that their state can be checkpointed
//! (`tch`'s optimizers do not expose it) and so that they match `torch.optim.AdamW` and
//! `transformers`' schedules step for step.

use std::collections::BTreeMap;

use tch::Tensor;

use crate::error::{Error, Result};

/// Linear warmup from 0, then linear decay to 0 (`linear`) or a constant rate (`constant`),
/// as `get_linear_schedule_with_warmup` / `get_constant_schedule_with_warmup`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
    pub decay: bool,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (counted from 0).
    pub fn lr(&self, step: usize) -> f64 {
        let factor = if step < self.warmup_steps {
            step as f64 / self.warmup_steps.max(1) as f64
        } else if self.decay {
            let remaining = self.total_steps.saturating_sub(step) as f64;
            (remaining / self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64).max(0.0)
        } else {
            1.0
        };
        self.base_lr * factor
    }
}

/// Decoupled-weight-decay Adam over named variables.
///
/// The variables are re-pointed at views of one contiguous buffer, those with weight decay
/// first, and the moments live in buffers of the same layout, so that an update is libtorch's
/// fused AdamW step (`torch.optim.AdamW(fused=True)`, transformers' default) over two slices
/// of it: one pass over weights, gradients and moments instead of several operations per
/// variable. The arithmetic is `torch.optim.AdamW`'s, element by element.
pub struct AdamW {
    names: Vec<String>,
    params: Vec<Tensor>,
    /// `(offset, numel)` of each variable in the flat buffers.
    spans: Vec<(i64, i64)>,
    flat: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Where the variables without weight decay start in the flat buffers.
    decay_end: i64,
    /// The gradients of the current step, gathered once.
    flat_grad: Option<Tensor>,
    /// What the gradients of this step are divided by in the update (clipping's inverse
    /// factor), on the device.
    grad_scale: Option<Tensor>,
    /// The number of the step being taken, as the fused step reads it (a float scalar).
    step_number: Tensor,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Updates done so far (for bias correction).
    steps: i64,
}

/// Whether `transformers`' Trainer applies weight decay to a variable: not to biases and not to
/// LayerNorm weights.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

impl AdamW {
    /// Takes over `variables` (all of one dtype and device).
    pub fn new(
        variables: impl IntoIterator<Item = (String, Tensor)>,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Self {
        let mut variables: Vec<(String, Tensor)> = variables.into_iter().collect();
        // Decayed variables first, each group by name.
        variables.sort_by(|a, b| (!decays(&a.0), &a.0).cmp(&(!decays(&b.0), &b.0)));
        let mut spans = Vec::with_capacity(variables.len());
        let mut offset = 0;
        let mut decay_end = 0;
        for (name, param) in &variables {
            let numel = param.numel() as i64;
            spans.push((offset, numel));
            offset += numel;
            if decays(name) {
                decay_end = offset;
            }
        }
        let pieces: Vec<Tensor> = variables
            .iter()
            .map(|(_, p)| p.detach().reshape([-1]))
            .collect();
        let flat = if pieces.is_empty() {
            Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu))
        } else {
            Tensor::cat(&pieces, 0)
        };
        let (mut names, mut params) = (Vec::new(), Vec::new());
        tch::no_grad(|| {
            for ((name, mut param), &(offset, numel)) in variables.into_iter().zip(&spans) {
                let view = flat.narrow(0, offset, numel).view(param.size().as_slice());
                param.set_data(&view);
                names.push(name);
                params.push(param);
            }
        });
        Self {
            exp_avg: flat.zeros_like(),
            exp_avg_sq: flat.zeros_like(),
            step_number: Tensor::zeros([], (tch::Kind::Float, flat.device())),
            names,
            params,
            spans,
            flat,
            decay_end,
            flat_grad: None,
            grad_scale: None,
            beta1,
            beta2,
            eps,
            weight_decay,
            steps: 0,
        }
    }

    /// The gradients of this step as one buffer (zeros for variables without gradient).
    fn grads(&mut self) -> &mut Tensor {
        if self.flat_grad.is_none() {
            let pieces: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| {
                    let g = p.grad();
                    if g.defined() {
                        g.reshape([-1])
                    } else {
                        Tensor::zeros([p.numel() as i64], (p.kind(), p.device()))
                    }
                })
                .collect();
            self.flat_grad = Some(if pieces.is_empty() {
                self.flat.zeros_like()
            } else {
                Tensor::cat(&pieces, 0)
            });
        }
        self.flat_grad.as_mut().expect("just set")
    }

    /// Sets all gradients to zero.
    pub fn zero_grad(&mut self) {
        self.flat_grad = None;
        self.grad_scale = None;
        for param in &self.params {
            let mut grad = param.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }

    /// Makes this step's update use gradients whose global L2 norm is at most `max_norm` (as
    /// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping, as a scalar tensor
    /// on the device. Everything happens there: the step never waits for the norm to reach the
    /// host. The gradients themselves are left as they are: the next [`step`](Self::step)
    /// divides them by the inverse factor as it reads them (by exactly 1 under the limit), and
    /// [`zero_grad`](Self::zero_grad) forgets the factor. Call it after any
    /// [`unscale_grads`](Self::unscale_grads) of the step; a second call replaces the first.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Tensor {
        let total = self.grads().norm();
        let coef = (total.full_like(max_norm) / (&total + 1e-6)).clamp_max(1.0);
        self.grad_scale = Some(coef.reciprocal().to_kind(tch::Kind::Float));
        total
    }

    /// Multiplies every gradient by `factor`; false when any gradient is not finite.
    pub fn unscale_grads(&mut self, factor: f64) -> bool {
        let grads = self.grads();
        let _ = grads.g_mul_scalar_(factor);
        bool::try_from(grads.isfinite().all()).unwrap_or(false)
    }

    /// One update with learning rate `lr`, exactly as `torch.optim.AdamW` (non-amsgrad):
    /// libtorch's fused step over the decayed variables, then over the others.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.steps += 1;
        let grad = self.grads().shallow_clone();
        let _ = self.step_number.fill_(self.steps as f64);
        let total = self.flat.size()[0];
        let groups = [
            (0, self.decay_end, self.weight_decay),
            (self.decay_end, total - self.decay_end, 0.0),
        ];
        tch::no_grad(|| {
            for (start, length, weight_decay) in groups {
                if length == 0 {
                    continue;
                }
                let slice = |t: &Tensor| t.narrow(0, start, length);
                crate::ffi::fused_adamw(
                    &slice(&self.flat),
                    &slice(&grad),
                    &crate::ffi::AdamWStep {
                        exp_avg: &slice(&self.exp_avg),
                        exp_avg_sq: &slice(&self.exp_avg_sq),
                        step: &self.step_number,
                        lr,
                        beta1: self.beta1,
                        beta2: self.beta2,
                        weight_decay,
                        eps: self.eps,
                        grad_scale: self.grad_scale.as_ref(),
                    },
                )?;
            }
            Ok(())
        })
    }

    /// Updates done so far.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// The moments as named tensors (`<name>.exp_avg`, `<name>.exp_avg_sq`) plus the step count.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut state = vec![("steps".to_owned(), Tensor::from_slice(&[self.steps]))];
        for (name, &(offset, numel)) in self.names.iter().zip(&self.spans) {
            state.push((
                format!("{name}.exp_avg"),
                self.exp_avg.narrow(0, offset, numel),
            ));
            state.push((
                format!("{name}.exp_avg_sq"),
                self.exp_avg_sq.narrow(0, offset, numel),
            ));
        }
        state
    }

    /// Restores moments saved by [`state`](Self::state); every variable must be present.
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let get = |key: &str| {
            state
                .get(key)
                .ok_or_else(|| Error::Config(format!("optimizer state lacks `{key}`")))
        };
        self.steps = i64::try_from(get("steps")?)?;
        tch::no_grad(|| -> Result<()> {
            for (name, &(offset, numel)) in self.names.iter().zip(&self.spans) {
                for (suffix, moment) in
                    [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)]
                {
                    let saved = get(&format!("{name}.{suffix}"))?;
                    if saved.numel() as i64 != numel {
                        return Err(Error::Config(format!(
                            "optimizer state `{name}.{suffix}` has {} values, the model {numel}",
                            saved.numel()
                        )));
                    }
                    moment
                        .narrow(0, offset, numel)
                        .f_copy_(&saved.reshape([-1]))?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn schedule_warms_up_then_decays_like_transformers() {
        let s = Schedule {
            base_lr: 1.0,
            warmup_steps: 10,
            total_steps: 110,
            decay: true,
        };
        assert_eq!(s.lr(0), 0.0);
        assert_eq!(s.lr(5), 0.5);
        assert_eq!(s.lr(10), 1.0);
        assert_eq!(s.lr(60), 0.5);
        assert_eq!(s.lr(110), 0.0);
        let constant = Schedule { decay: false, ..s };
        assert_eq!(constant.lr(100), 1.0);
    }

    #[test]
    fn adamw_matches_the_closed_form_first_step() {
        // First step: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) = lr * sign(g),
        // after decoupled decay p *= 1 - lr * wd.
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let loss = (&p * Tensor::from_slice(&[3.0f32, -0.5])).sum(Kind::Float);
        loss.backward();
        let mut opt = AdamW::new(
            [("w.weight".to_owned(), p.shallow_clone())],
            0.9,
            0.999,
            1e-8,
            0.1,
        );
        opt.step(0.01).unwrap();
        let got: Vec<f32> = p.detach().try_into().unwrap();
        let want = [1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        assert!(!decays("encoder.embeddings.LayerNorm.weight") && !decays("classifier.bias"));
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let moments = |max_norm: f64| {
            let p = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
            (&p * Tensor::from_slice(&[3.0f32, 4.0]))
                .sum(Kind::Float)
                .backward();
            let mut opt = AdamW::new([("w".to_owned(), p.shallow_clone())], 0.9, 0.999, 1e-8, 0.0);
            let norm = f64::try_from(opt.clip_grad_norm(max_norm)).unwrap();
            assert!((norm - 5.0).abs() < 1e-6);
            opt.step(0.01).unwrap();
            // After one step the first moment is (1 - beta1) times the gradient used.
            let state: BTreeMap<String, Tensor> = opt.state().into_iter().collect();
            let m: Vec<f32> = (&state["w.exp_avg"] / 0.1).try_into().unwrap();
            m
        };
        let clipped = moments(1.0);
        assert!(
            (clipped[0] - 0.6).abs() < 1e-5 && (clipped[1] - 0.8).abs() < 1e-5,
            "{clipped:?}"
        );
        // Under the limit, gradients stay as they are.
        let unclipped = moments(10.0);
        assert!(
            (unclipped[0] - 3.0).abs() < 1e-5 && (unclipped[1] - 4.0).abs() < 1e-5,
            "{unclipped:?}"
        );
    }

    #[test]
    fn only_decayed_variables_decay() {
        // With zero gradients the moments stay 0 and the update is the decay alone.
        let weight = Tensor::from_slice(&[2.0f32]).set_requires_grad(true);
        let bias = Tensor::from_slice(&[2.0f32]).set_requires_grad(true);
        ((&weight + &bias) * 0.0).sum(Kind::Float).backward();
        let mut opt = AdamW::new(
            [
                ("layer.bias".to_owned(), bias.shallow_clone()),
                ("layer.weight".to_owned(), weight.shallow_clone()),
            ],
            0.9,
            0.999,
            1e-8,
            0.5,
        );
        opt.step(0.1).unwrap();
        assert!((f64::try_from(weight.detach()).unwrap() - 2.0 * (1.0 - 0.05)).abs() < 1e-6);
        assert_eq!(f64::try_from(bias.detach()).unwrap(), 2.0);
    }
}
