"""Tests for the ImageNet pipeline: prepare/imagenet.py, imagenet.py, augment.py, randaugment.py.

A tiny ImageNet (3 classes, 25 training JPEGs of which one is truncated, 6 validation
JPEGs) is written as the ImageNet tars and built with the TF-free builder into the TFDS
array_record layout that the loader reads.
"""

import io
import logging
import tarfile

import main_runner
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from configs import imagenet as imagenet_config
from perceiver_jax import model
from perceiver_jax.data import augment
from perceiver_jax.data import contract
from perceiver_jax.data import datasets
from perceiver_jax.data import image_ops
from perceiver_jax.data import imagenet
from perceiver_jax.data import imagenet_classes
from perceiver_jax.data import randaugment
from perceiver_jax.data.prepare import imagenet as prepare_imagenet

SYNSETS = imagenet_classes.imagenet_synsets()[:3]
NUM_TRAIN, NUM_VAL = 25, 6
CORRUPT_NAME = f"{SYNSETS[1]}_corrupt.JPEG"


def _jpeg(rng, height, width) -> bytes:
  out = io.BytesIO()
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  Image.fromarray(image).save(out, "JPEG", quality=90)
  return out.getvalue()


def _add(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_imagenet_tars(root, *, corrupt_val: bool = False) -> str:
  """ILSVRC2012_img_{train,val}.tar and a validation labels file under `root`."""
  rng = np.random.default_rng(0)
  with tarfile.open(root / prepare_imagenet.TRAIN_TAR, "w") as outer:
    for c, synset in enumerate(SYNSETS):
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
        for i in range(8):
          _add(inner, f"{synset}_{i}.JPEG", _jpeg(rng, 36 + 3 * i, 60 - 2 * i))
        if c == 1:
          _add(inner, CORRUPT_NAME, _jpeg(rng, 40, 40)[:-200])
      _add(outer, f"{synset}.tar", inner_bytes.getvalue())
  names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, NUM_VAL + 1)]
  with tarfile.open(root / prepare_imagenet.VAL_TAR, "w") as tar:
    for i, name in enumerate(names):
      data = _jpeg(rng, 50 + i, 41)
      _add(tar, name, data[:300] if corrupt_val and i == 2 else data)
  labels = root / "validation_labels.txt"
  labels.write_text("".join(f"{SYNSETS[i % 3]}\n" for i in range(NUM_VAL)))
  return str(labels)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  manual = tmp_path_factory.mktemp("manual")
  labels = write_imagenet_tars(manual)
  data_dir = tmp_path_factory.mktemp("tfds")
  prepare_imagenet.build(str(manual), str(data_dir), labels)
  return str(data_dir)


def make_config(data_dir, **data):
  config = imagenet_config.get_config("variant=testing")
  config.data.data_dir = data_dir
  config.data.update(data)
  return config


def make(config, process_index=0, process_count=1):
  facts = datasets.ModelFacts(model.input_shapes(config.model), config.model.num_classes)
  return imagenet.make_data(config, facts, process_index=process_index, process_count=process_count)


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_build_writes_the_tfds_layout(tfds_dir):
  source = tfds.data_source("imagenet2012", data_dir=tfds_dir, download=False)
  builder = tfds.builder("imagenet2012", data_dir=tfds_dir)
  assert builder.info.features["label"].names == imagenet_classes.imagenet_synsets()
  assert len(source["train"]) == NUM_TRAIN and len(source["validation"]) == NUM_VAL
  for index in range(NUM_VAL):
    record = source["validation"][index]
    number = int(record["file_name"].decode()[-13:-5])
    assert record["label"] == (number - 1) % 3  # labels follow the sorted file names
    assert record["image"].shape == (49 + number, 41, 3)
  raw = imagenet.Split(make_config(tfds_dir).data, "train")
  labels = {name: label for name, label in (raw.record(i)[2:0:-1] for i in range(NUM_TRAIN))}
  assert all(labels[name] == SYNSETS.index(name.split("_")[0]) for name in labels)


def test_prepare_names_missing_tars_and_backends(tmp_path):
  with pytest.raises(ValueError, match=f"^{tmp_path} holds neither ILSVRC2012_img_train.tar"):
    prepare_imagenet.prepare(str(tmp_path), str(tmp_path / "out"))
  with pytest.raises(ValueError, match=r"backend='jax': expected one of \('auto', 'tensorflow'"):
    prepare_imagenet.prepare(str(tmp_path), str(tmp_path / "out"), backend="jax")


def test_png_and_cmyk_are_stored_as_rgb_jpeg():
  rng = np.random.default_rng(1)
  pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
  png, cmyk = io.BytesIO(), io.BytesIO()
  Image.fromarray(pixels).save(png, "PNG")
  Image.fromarray(pixels).convert("CMYK").save(cmyk, "JPEG")
  for data in (png.getvalue(), cmyk.getvalue()):
    with Image.open(io.BytesIO(prepare_imagenet._as_rgb_jpeg(data))) as image:
      assert (image.format, image.mode) == ("JPEG", "RGB")
  jpeg = _jpeg(rng, 8, 8)
  assert prepare_imagenet._as_rgb_jpeg(jpeg) is jpeg


def test_train_batches_shapes_dtypes_and_soft_labels(tfds_dir):
  data = make(make_config(tfds_dir))
  assert data.num_train_examples == NUM_TRAIN
  assert data.example["inputs"].shape == (1, 32, 32, 3)
  assert data.example["labels"].shape == (1, 10)
  batch = next(data.train_batches(0, (2, 4)))
  assert set(batch) == {"inputs", "labels"}
  assert batch["inputs"].shape == (2, 4, 32, 32, 3) and batch["inputs"].dtype == np.float32
  assert batch["labels"].shape == (2, 4, 10) and batch["labels"].dtype == np.float32
  np.testing.assert_allclose(batch["labels"].sum(-1), 1.0, rtol=1e-6)
  assert np.all(batch["labels"][..., 3:] == 0)  # only the 3 classes of the data
  assert 0.2 < batch["inputs"].std() < 3.0  # normalised, not 0..255


def test_unmixed_labels_are_int_and_follow_the_epoch_order(tfds_dir):
  config = make_config(tfds_dir, mixup_alpha=0.0, cutmix_alpha=0.0, randaugment_layers=0)
  data = make(config)
  assert data.example["labels"].dtype == np.int32
  split = imagenet.Split(config.data, "train")
  order = np.random.default_rng((config.seed, 0)).permutation(NUM_TRAIN)
  labels = np.concatenate([b["labels"] for b in take(data.train_batches(0, (8,)), 3)])
  expected = []
  for position in range(24):  # 3 steps of 8; the 25th example is dropped this epoch
    _, label, name = split.record(order[position])
    if name == CORRUPT_NAME:  # replaced by the next example of the epoch
      _, label, _ = split.record(order[position + 1])
    expected.append(label)
  np.testing.assert_array_equal(labels, expected)


def test_resume_gives_the_batches_of_an_uninterrupted_run(tfds_dir):
  data = make(make_config(tfds_dir))
  full = take(data.train_batches(0, (8,)), 5)  # 3 steps per epoch: crosses an epoch
  resumed = take(data.train_batches(3, (2, 4)), 2)
  for a, b in zip(full[3:], resumed, strict=True):
    np.testing.assert_array_equal(a["inputs"], b["inputs"].reshape(a["inputs"].shape))
    np.testing.assert_array_equal(a["labels"], b["labels"].reshape(a["labels"].shape))
  again = take(make(make_config(tfds_dir)).train_batches(0, (8,)), 2)
  np.testing.assert_array_equal(full[1]["inputs"], again[1]["inputs"])
  assert not np.array_equal(full[0]["inputs"], full[1]["inputs"])


def test_two_processes_split_the_global_batch(tfds_dir):
  config = make_config(tfds_dir)
  whole = take(make(config).train_batches(1, (8,)), 2)
  halves = [take(make(config, p, 2).train_batches(1, (1, 4)), 2) for p in range(2)]
  for step in range(2):
    for key in ("inputs", "labels"):
      joined = np.concatenate([halves[p][step][key][0] for p in range(2)])
      np.testing.assert_array_equal(joined, whole[step][key])


@pytest.fixture
def parsed_flags():
  """Grain's worker processes read absl flags, which absl.app parses in the trainer."""
  was_parsed = flags.FLAGS.is_parsed()
  flags.FLAGS.mark_as_parsed()
  yield
  if not was_parsed:
    flags.FLAGS.unparse_flags()


def test_worker_processes_give_the_same_batches(tfds_dir, parsed_flags):
  config = make_config(tfds_dir)
  inline = take(make(config).train_batches(2, (8,)), 2)
  config.data.num_workers = 2
  workers = take(make(config).train_batches(2, (8,)), 2)
  for a, b in zip(inline, workers, strict=True):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_eval_is_the_centre_crop_and_covers_each_example_once(tfds_dir):
  config = make_config(tfds_dir)
  config.eval_batch_size = 4
  split = imagenet.Split(config.data, "validation")
  expected = {}
  for index in range(NUM_VAL):
    image, label = split.decode(index, 10)
    expected[label, image.shape] = image_ops.preprocess_for_eval(image, 32)
  seen = []
  for process in range(2):
    batches = list(make(config, process, 2).eval_batches((2,)))
    assert len(batches) == 2  # 3 examples per process, batches of 2, the last padded
    for batch in batches:
      assert batch["inputs"].shape == (2, 32, 32, 3) and batch["labels"].dtype == np.int32
      assert batch["mask"].dtype == np.float32
      for inputs, label, mask in zip(batch["inputs"], batch["labels"], batch["mask"], strict=True):
        if mask == 0:
          assert not inputs.any()
          continue
        matches = [k for k, v in expected.items() if k[0] == label and np.array_equal(v, inputs)]
        assert len(matches) == 1
        seen.append(matches[0])
  assert sorted(seen) == sorted(expected)


def test_mix_pair_label_mass_matches_pixel_shares():
  ones, zeros = np.ones((1, 16, 20, 3), np.float32), np.zeros((1, 16, 20, 3), np.float32)
  images = np.concatenate([zeros, ones])  # example 0 all 0, example 1 all 1
  labels = np.eye(4, dtype=np.float32)[[0, 3]]
  for seed in range(20):
    for kind, alpha in (("mixup", 0.2), ("cutmix", 1.0)):
      mixed, soft = augment.mix_pair(images, labels, kind, alpha, np.random.default_rng(seed))
      np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
      share_of_1 = mixed[0].mean()  # the share of example 1's pixels in example 0
      np.testing.assert_allclose(soft[0, 3], share_of_1, atol=1e-6)
      np.testing.assert_allclose(soft[1, 0], 1.0 - mixed[1].mean(), atol=1e-6)
      if kind == "cutmix":
        assert set(np.unique(mixed)) <= {0.0, 1.0}
  unchanged = augment.mix_pair(images, labels, "mixup", 0.0, np.random.default_rng(0))
  np.testing.assert_array_equal(unchanged[0], images)


def test_half_of_each_batch_is_mixup_and_half_cutmix(tfds_dir):
  config = make_config(tfds_dir, randaugment_layers=0)
  order = contract.TrainOrder(NUM_TRAIN, 8, config.seed)
  train = imagenet._Train(config.data, imagenet.Split(config.data, "train"), order, 0, 10)
  examples = [train.example(i) for i in range(8)]
  batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
  plain = image_ops.normalize(batch["inputs"])
  out = train.finish(batch)
  onehot = np.eye(10, dtype=np.float32)[batch["labels"]]
  for pair in range(4):
    own, other = slice(2 * pair, 2 * pair + 1), slice(2 * pair + 1, 2 * pair + 2)
    a, b, mixed, soft = plain[own][0], plain[other][0], out["inputs"][own][0], out["labels"][own][0]
    if pair % 2:  # CutMix: each pixel is one example's or the other's, in label proportion
      from_b = np.isclose(mixed, b, atol=1e-5).all(-1) & ~np.isclose(mixed, a, atol=1e-5).all(-1)
      assert (from_b | np.isclose(mixed, a, atol=1e-5).all(-1)).all()
      lam = 1.0 - from_b.mean()
    else:  # MixUp: a blend with the label weights
      lam = float(soft @ onehot[own][0]) if batch["labels"][own] != batch["labels"][other] else None
      if lam is None:
        continue
      np.testing.assert_allclose(mixed, lam * a + (1 - lam) * b, atol=1e-4)
    np.testing.assert_allclose(soft, lam * onehot[own][0] + (1 - lam) * onehot[other][0], atol=1e-6)


def test_random_resized_crop_boxes_and_fallback():
  rng = np.random.default_rng(0)
  for _ in range(200):
    top, left, h, w = augment.sample_crop(375, 500, rng)
    assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500
    assert 0.07 * 375 * 500 <= h * w <= 375 * 500 and 0.74 <= w / h <= 1.34
  # A full-area crop with a square aspect cannot fit a 4:3 image: the eval centre crop.
  box = augment.sample_crop(300, 400, rng, area_range=(1, 1), ratio_range=(1, 1), size=224)
  assert box == (19, 69, 262, 262)
  image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
  out = augment.random_resized_crop(image, np.random.default_rng(3), 32)
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8
  np.testing.assert_array_equal(
    out, augment.random_resized_crop(image, np.random.default_rng(3), 32)
  )
  flipped = augment.random_flip(image, np.random.default_rng(0))
  assert np.array_equal(flipped, image) or np.array_equal(flipped, image[:, ::-1])


def test_randaugment_ops():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
  level = 0.5
  np.testing.assert_array_equal(randaugment.invert(image, level, rng), 255 - image)
  np.testing.assert_array_equal(randaugment.posterize(image, level, rng), image & 0b11000000)
  solarized = randaugment.solarize(image, level, rng)
  np.testing.assert_array_equal(solarized, np.where(image < 128, image, 255 - image))
  added = randaugment.solarize_add(image, level, rng)
  np.testing.assert_array_equal(added, np.where(image < 128, np.minimum(image + 55, 255), image))
  for op in (randaugment.color, randaugment.contrast, randaugment.brightness):
    np.testing.assert_array_equal(op(image, level, rng), image)  # factor 1.0 at magnitude 5
  shifted = randaugment.translate_x(image, 0.05, np.random.default_rng(1))  # 5 pixels
  left = np.array_equal(shifted[:, :-5], image[:, 5:]) and (shifted[:, -5:] == 128).all()
  right = np.array_equal(shifted[:, 5:], image[:, :-5]) and (shifted[:, :5] == 128).all()
  assert left != right
  np.testing.assert_array_equal(randaugment.rotate(image, 0.0, rng), image)
  np.testing.assert_array_equal(randaugment.shear_y(image, 0.0, rng), image)
  cut = randaugment.cutout(np.zeros((200, 200, 3), np.uint8), level, np.random.default_rng(2))
  rows, cols = np.nonzero(cut[..., 0] == 128)
  assert rows.max() - rows.min() + 1 <= 40 and cols.max() - cols.min() + 1 <= 40
  assert (cut == 128).all(-1).sum() == (cut == 128).any(-1).sum() > 0
  out = randaugment.randaugment(image, np.random.default_rng(5), 4, 5)
  assert out.shape == image.shape and out.dtype == np.uint8
  np.testing.assert_array_equal(out, randaugment.randaugment(image, np.random.default_rng(5), 4, 5))
  with pytest.raises(ValueError, match="magnitude=11"):
    randaugment.randaugment(image, rng, 1, 11)


def test_corrupt_training_jpeg_is_skipped_and_counted(tfds_dir, caplog):
  config = make_config(tfds_dir, randaugment_layers=0)
  config.batch_size = 24  # one step is a whole epoch, so it meets the corrupt image
  with caplog.at_level(logging.WARNING):
    batch = next(make(config).train_batches(0, (24,)))
  assert batch["inputs"].shape[0] == 24 and np.isfinite(batch["inputs"]).all()
  assert "1 corrupt image(s) skipped at step 0" in caplog.text


def test_corrupt_eval_jpeg_is_an_error_naming_the_record(tmp_path):
  labels = write_imagenet_tars(tmp_path, corrupt_val=True)
  prepare_imagenet.build(str(tmp_path), str(tmp_path / "tfds"), labels)
  data = make(make_config(str(tmp_path / "tfds")))
  with pytest.raises(ValueError, match=r"validation record \d+ \(ILSVRC2012_val_00000003.JPEG\)"):
    list(data.eval_batches((8,)))


def test_missing_data_and_bad_settings_are_one_line_errors(tfds_dir, tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(ValueError, match=f"no TFDS 'imagenet2012' dataset in {missing}/imagenet2012"):
    make(make_config(str(missing)))
  with pytest.raises(ValueError, match=r"split 'test' is not in .*: it has \['train', 'valid"):
    make(make_config(tfds_dir, eval_split="test"))
  with pytest.raises(
    ValueError, match=r"config.data.image_size=64: the model takes inputs of shape \(32, 32, 3\)"
  ):
    make(make_config(tfds_dir, image_size=64))
  windowed = datasets.ModelFacts((32, 32, 3), 10, eval_windows=2)
  with pytest.raises(ValueError, match="eval_windows=2: ImageNet evaluates one view per image"):
    imagenet.make_data(make_config(tfds_dir), windowed, process_index=0, process_count=1)
  config = make_config(tfds_dir)
  config.model.num_classes = 2
  with pytest.raises(
    ValueError, match=r"record \d+ \(n01484850_\d.JPEG\) has label 2, not in \[0, 2\)"
  ):
    next(make(config).train_batches(0, (8,)))
  config = make_config(tfds_dir)
  config.batch_size = 6
  with pytest.raises(ValueError, match=r"config.batch_size=6: MixUp/CutMix pairs need an even"):
    make(config, 0, 2)


def test_two_steps_through_main(tfds_dir, tmp_path):
  """The real command on the tiny TFDS build: trains 2 steps (MixUp/CutMix soft labels,
  label smoothing, LAMB) and evaluates every validation image once."""
  import json

  workdir = tmp_path / "run"
  result = main_runner.run_main(
    "imagenet.py:variant=testing",
    workdir,
    f"--config.data.data_dir={tfds_dir}",
    "--config.total_steps=2",
    "--config.eval_every_steps=2",
    "--config.log_every_steps=1",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  final = json.loads((workdir / "final.json").read_text())
  assert final["step"] == 2 and final["eval/count"] == NUM_VAL
  assert np.isfinite(final["eval/loss"]) and 0.0 <= final["eval/top1"] <= 1.0
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in lines if "train/loss" in m] == [1, 2]
