"""R = 4 replicates on one device vs sharded over 2 devices (run.parallel=replicates): train steps/s
of LeNet-300-100 on MNIST-1D and LeNet-5 on mnist_5k, best of 3 timed segments of 20 steps after a
warm-up (compile excluded). On a CPU, force the devices:

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python experiments/replicates_over_devices.py

(forced CPU devices share the machine's cores, so this shows the overhead there; the layout pays
off with real devices.)"""
import time

from lth.api import load_config
from lth.pruning import masks as M
from lth.studies import lottery
from lth.training.loop import device_data

for model in ("lenet_300_100", "lenet5"):
    res = {}
    for devices, parallel in ((1, "data"), (2, "replicates")):
        sets = {"model.name": model, "replicates": 4, "run.devices": devices, "run.parallel": parallel,
                "run.progress": False,
                "lottery.levels": 0}
        if model == "lenet5":
            sets.update({"data.name": "mnist_5k", "data.normalize": "0.1307/0.3081", "train.batch_size": 60,
                         "model.conv_impl": "xla"})
        cfg = load_config("mnist1d_mlp", sets)
        s = lottery.setup(cfg)
        p, ms = s.trainer.init_replicates(lottery.keys(s, "init"), s.input_shape)
        st = s.trainer.place(s.trainer.new_state(p, ms, M.ones_like(p), 0, lottery.keys(s, "train"),
                                                 lottery.keys(s, "data")))
        d = device_data(s.trainer, s.dataset)
        perm = s.trainer.epoch_perm(st.data_rng, 0)
        n = min(20, s.trainer.steps_per_epoch)
        st, l = s.trainer.run_steps(st, perm, d.x_train, d.y_train, n)
        l.block_until_ready()
        best = 0
        for _ in range(3):
            t = time.perf_counter()
            st, l = s.trainer.run_steps(st, perm, d.x_train, d.y_train, n)
            l.block_until_ready()
            best = max(best, n / (time.perf_counter() - t))
        res[(devices, parallel)] = (best, s.trainer.replicate_mode,
                                    dict(s.trainer.mesh.shape) if s.trainer.mesh else None)
    a, b = res[(1, "data")], res[(2, "replicates")]
    print(f"{model}: R=4, 1 device ({a[1]}) {a[0]:.1f} steps/s; "
          f"2 devices replicate-parallel {b[2]} ({b[1]}) {b[0]:.1f} steps/s; ratio {b[0]/a[0]:.2f}")
