"""Model zoo: Flax Linen modules by name. Each family is registered below, one line each, in
lth.registry.MODELS with its traits (lth/models/zoo.py: Family); a family from outside the package:
lth.register('model', NAME, Family(...))."""
from lth.models import bert, lenet, resnet, vgg
from lth.models.inits import Init  # noqa: F401
from lth.models.zoo import Family, build, names  # noqa: F401
from lth.registry import MODELS

MODELS.add("lenet", Family(lenet.PATTERNS, ((28, 28, 1), 10, 60), synflow_init=lenet.synflow_init))
MODELS.add("vgg", Family(vgg.PATTERNS, ((32, 32, 3), 10, 128), synflow_init=vgg.synflow_init))
MODELS.add("resnet", Family(resnet.PATTERNS, ((32, 32, 3), 10, 128), residual=True, synflow_init=resnet.synflow_init))
MODELS.add("bert", Family(bert.PATTERNS, ((128,), 5, 32)))   # 128 token ids, BBC News' 5 classes
