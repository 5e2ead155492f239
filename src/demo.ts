/**
 * The main job until the trainer exists: a short engine demo. It trains a small
 * MLP to denoise a 2-D mixture of 8 Gaussians (the epsilon-prediction loss of
 * DDPM, Ho et al. 2020, Algorithm 1, with a continuous VP schedule), then shows
 * that the live-tensor count did not grow and how fast the steps ran.
 *
 * Run: npm run demo [-- --steps N]
 */
import { cat, F, Generator, getNumThreads, grad, memory, noGrad, tensor, Tensor, tidy, torchVersion } from './engine';
import { Linear, Module, SinusoidalEmbedding } from './nn';
import { Progress } from './util/progress';

class Denoiser extends Module {
  emb = this.child('emb', new SinusoidalEmbedding(32));
  l1 = this.child('l1', new Linear(2 + 32, 128));
  l2 = this.child('l2', new Linear(128, 128));
  l3 = this.child('l3', new Linear(128, 2));
  forward(x: Tensor, t: Tensor): Tensor {
    return tidy(() => {
      const h = this.l1.forward(cat([x, this.emb.forward(t.mul(1000))], 1)).silu(); // [B, 128]
      return this.l3.forward(this.l2.forward(h).silu()); // [B, 2]
    });
  }
}

/** 8 Gaussians on a circle of radius 2, std 0.1. */
function eightGaussians(g: Generator, n: number): Tensor {
  return tidy(() => {
    const k = g
      .randint(0, 8, [n])
      .float()
      .mul((2 * Math.PI) / 8);
    const centers = cat([k.cos().unsqueeze(1), k.sin().unsqueeze(1)], 1).mul(2);
    return centers.add(g.randn([n, 2]).mul(0.1));
  });
}

function main(): void {
  const stepsArg = process.argv.indexOf('--steps');
  const steps = stepsArg > 0 ? Number(process.argv[stepsArg + 1]) : 3000;
  if (!Number.isSafeInteger(steps) || steps < 1) throw new RangeError(`--steps must be a positive integer, got ${process.argv[stepsArg + 1]}`);
  console.log(`diffuse engine demo: libtorch ${torchVersion()}, ${getNumThreads()} threads`);
  const g = new Generator(0);
  const net = new Denoiser();
  const params = net.parameters();
  const lr = 2e-3;
  const bar = new Progress(steps, 'train');
  const before = memory().tensors;
  const t0 = performance.now();
  let ema = 0;
  for (let i = 0; i < steps; i++) {
    const loss = tidy(() => {
      const x0 = eightGaussians(g, 256);
      const t = g.rand([256]).mul(0.999).add(0.001); // t in (0, 1]
      const abar = t
        .mul(Math.PI / 2)
        .cos()
        .square()
        .unsqueeze(1); // cosine schedule
      const eps = g.randn([256, 2]);
      const xt = x0.mul(abar.sqrt()).add(eps.mul(abar.rsub(1).sqrt())); // q(x_t | x_0)
      const l = F.mseLoss(net.forward(xt, t), eps); // || eps - eps_theta(x_t, t) ||^2
      const grads = grad(l, params);
      noGrad(() => params.forEach((p, k) => p.add_(grads[k]!, -lr)));
      return l.item();
    });
    ema = i === 0 ? loss : 0.98 * ema + 0.02 * loss;
    bar.tick({ loss: ema });
  }
  bar.done();
  const secs = (performance.now() - t0) / 1000;
  // A noise-prediction net that learned something predicts eps better than 0 (loss 1).
  const test = tidy(() => {
    const x0 = eightGaussians(g, 4096);
    const t = tensor(new Float32Array(4096).fill(0.5));
    const abar = Math.cos((0.5 * Math.PI) / 2) ** 2;
    const eps = g.randn([4096, 2]);
    const xt = x0.mul(Math.sqrt(abar)).add(eps.mul(Math.sqrt(1 - abar)));
    return noGrad(() => F.mseLoss(net.forward(xt, t), eps).item());
  });
  console.log(`${steps} steps in ${secs.toFixed(1)} s (${(steps / secs).toFixed(0)} steps/s); held-out loss at t=0.5: ${test.toFixed(3)} (1.0 = no skill)`);
  console.log(`live tensors before/after the loop: ${before}/${memory().tensors}`);
  net.dispose();
}

main();
