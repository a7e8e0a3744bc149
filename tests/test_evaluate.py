"""Robust evaluation: the library over batches of a small trained model, and the CLI on a saved .npz."""

import json

import jax
import numpy as np
import pytest

from attack_models import make_data, train_tiny_model
from jaxseg import attacks, evaluate
from jaxseg.cli import main


@pytest.fixture(scope="module")
def trained():
    model, variables = train_tiny_model()
    return attacks.logits_function(model), variables


def test_evaluate_sea_over_padded_batches(trained):
    logits_fn, variables = trained
    images, labels = make_data(seed=9, count=6)
    seen = []
    results = evaluate.evaluate(
        logits_fn, evaluate.array_batches(images, labels, batch_size=4), variables=variables, attack="sea",
        eps=(0.0, 4 / 255), iterations=6, progress=seen.append,
    )
    assert seen == [4, 2] and results["num_examples"] == 6
    clean = results["clean"]
    expected = (np.asarray(logits_fn(variables, images)).argmax(-1) == labels).mean()
    assert clean["aAcc"] == pytest.approx(expected, abs=1e-6)
    at_zero, at_four = results["robust"]
    assert at_zero["aAcc"] == pytest.approx(clean["aAcc"]) and at_zero["mIoU"] == pytest.approx(clean["mIoU"])
    assert list(at_four["components"]) == ["apgd-mask-ce-bal", "apgd-mask-ce", "apgd-js"]
    assert at_four["aAcc"] < clean["aAcc"] and at_four["mIoU"] < clean["mIoU"]
    for component in at_four["components"].values():
        assert at_four["aAcc"] <= component["aAcc"] + 1e-6 and at_four["mIoU_greedy"] <= component["mIoU"] + 1e-6
        assert at_four["aAcc_per_image"] <= component["aAcc_per_image"] + 1e-6
    # The reference search starts on mask-ce-bal and only accepts switches that lower the mIoU.
    assert at_four["mIoU"] <= at_four["components"]["apgd-mask-ce-bal"]["mIoU"] + 1e-6
    # Every image has the same number of labelled pixels here, so both aAcc forms agree.
    assert at_four["aAcc_per_image"] == pytest.approx(at_four["aAcc"], abs=1e-9)
    for scores in (clean, at_four, *at_four["components"].values()):
        assert 0 < scores["mAcc"] <= 1
    assert results["class_weights"]["mode"] == "image" and results["class_weights"]["values"] is None
    table = evaluate.results_markdown(results)
    assert "| 4/255 | **sea (worst case)** |" in table and "apgd-js" in table and "mAcc" in table


def test_evaluate_rejects_bad_arguments(trained):
    logits_fn, variables = trained
    images, labels = make_data(seed=9, count=2)
    batches = list(evaluate.array_batches(images, labels, batch_size=2))
    with pytest.raises(ValueError, match="unknown attack"):
        evaluate.evaluate(logits_fn, batches, variables=variables, attack="fgsm")
    with pytest.raises(ValueError, match="eps"):
        evaluate.evaluate(logits_fn, batches, variables=variables, attack="pgd", eps=(-1.0,))
    with pytest.raises(ValueError, match="no valid examples"):
        evaluate.evaluate(logits_fn, [], variables=variables, attack="pgd")


def test_worst_adversarial_picks_the_lowest_accuracy_component(trained):
    logits_fn, variables = trained
    images, labels = make_data(seed=4, count=2)
    adversarial, statistics = evaluate.run_attack("padam", logits_fn, images, labels, jax.random.PRNGKey(0),
                                                  eps=8 / 255, norm="linf", iterations=3, variables=variables)
    assert adversarial.shape == (2,) + images.shape
    chosen, choice = evaluate.worst_adversarial(adversarial, statistics)
    accuracy = np.asarray(statistics.correct) / np.asarray(statistics.labelled)
    for image in range(2):
        assert accuracy[int(choice[image]), image] == accuracy[:, image].min()
        np.testing.assert_array_equal(np.asarray(chosen[image]), np.asarray(adversarial[int(choice[image]), image]))


def test_cli_evaluate_writes_results(tmp_path, capsys):
    images, labels = make_data(seed=3, count=5, size=32, block=8)
    arrays = tmp_path / "data.npz"
    np.savez(arrays, images=images, labels=labels)
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", "upernet_convnext_atto", "--random-init", "--arrays", str(arrays),
                 "--attack", "apgd", "--eps", "4/255,8/255", "--iterations", "2", "--batch-size", "2",
                 "--num-examples", "3", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["num_examples"] == 3 and [r["eps_255"] for r in results["robust"]] == pytest.approx([4, 8])
    for row in results["robust"]:
        assert 0 <= row["aAcc"] <= results["clean"]["aAcc"] + 1e-6
        assert 0 <= row["mIoU"] <= results["clean"]["mIoU"] + 1e-6
    assert "| 8/255 |" in (out / "results.md").read_text()
    assert "wrote" in capsys.readouterr().out


def test_cli_reports_bad_input(tmp_path, capsys):
    arrays = tmp_path / "bad.npz"
    np.savez(arrays, pictures=np.zeros((1, 32, 32, 3)))
    common = ["--model", "upernet_convnext_atto", "--random-init", "--out", str(tmp_path / "o")]
    assert main(["evaluate", "--arrays", str(arrays), *common]) == 2
    assert "must contain arrays 'images' and 'labels'" in capsys.readouterr().err
    assert main(["evaluate", "--arrays", str(tmp_path / "missing.npz"), *common]) == 2
    assert "does not exist" in capsys.readouterr().err
    images, labels = make_data(seed=1, count=1, size=32, block=8)
    np.savez(arrays, images=images, labels=labels)
    assert main(["evaluate", "--arrays", str(arrays), "--eps", "four", *common]) == 2
    assert "--eps must be" in capsys.readouterr().err
    assert main(["evaluate", "--arrays", str(arrays), "--model", "no_such_model", "--out", str(tmp_path)]) == 2
    assert "neither a checkpoint directory nor a registered model" in capsys.readouterr().err
    broken = images.copy()
    broken[0, 0, 0, 0] = np.nan
    np.savez(arrays, images=broken, labels=labels)
    assert main(["evaluate", "--arrays", str(arrays), *common]) == 2
    assert f"{arrays}: image values must be finite" in capsys.readouterr().err
    np.savez(arrays, images=images, labels=labels)
    assert main(["attack", "--arrays", str(arrays), "--attack", "pgd", "--step-size", "-1", "--iterations", "1",
                 *common]) == 2
    assert "step_size must be finite and > 0" in capsys.readouterr().err


def test_cli_attack_saves_adversarial_examples(tmp_path):
    images, labels = make_data(seed=3, count=2, size=32, block=8)
    arrays = tmp_path / "data.npz"
    np.savez(arrays, images=images, labels=labels)
    code = main(["attack", "--model", "upernet_convnext_atto", "--random-init", "--arrays", str(arrays),
                 "--attack", "pgd", "--eps", "8/255", "--iterations", "1", "--batch-size", "2",
                 "--out", str(tmp_path / "adv")])
    assert code == 0
    with np.load(tmp_path / "adv" / "adversarial.npz") as saved:
        np.testing.assert_array_equal(saved["images"], images)
        assert np.abs(saved["adversarial"] - images).max() <= 8 / 255 + 1e-6
        assert saved["adversarial_prediction"].shape == labels.shape


def test_robust_scores_are_never_above_clean_ones():
    # A model whose prediction is a step of the mean colour, with no gradient: the attack's random start
    # pushes about half of the pixels over the step, which makes them *correct* (labels are all class 1).
    def logits_fn(images):
        score = jax.lax.stop_gradient((images.mean(-1) > 0.5).astype(np.float32))
        return np.float32(10.0) * jax.numpy.stack([1 - score, score], -1)

    images = np.full((2, 8, 8, 3), 0.499, np.float32)
    labels = np.ones((2, 8, 8), np.int32)
    common = dict(attack="pgd", eps=(4 / 255,), iterations=1)
    attacked_only = evaluate.evaluate(logits_fn, evaluate.array_batches(images, labels, 2), clean_in_worst_case=False,
                                      **common)
    assert attacked_only["clean"]["aAcc"] == 0 and attacked_only["robust"][0]["aAcc"] > 0.2
    assert attacked_only["robust"][0]["clean_kept"] == 0
    results = evaluate.evaluate(logits_fn, evaluate.array_batches(images, labels, 2), **common)
    row = results["robust"][0]
    assert row["aAcc"] == 0 and row["components"]["pgd-ce"]["aAcc"] == 0 and row["clean_kept"] == 2
    assert results["clean_in_worst_case"] and "clean kept in 2" in evaluate.results_markdown(results)


def test_open_model_builds_random_models_and_reads_checkpoints(tmp_path):
    from jaxseg import checkpoint

    module, variables, metadata = checkpoint.open_model("upernet_convnext_atto", random_init=True, num_classes=3,
                                                        image_size=(32, 64), seed=1)
    assert metadata == {"model": "upernet_convnext_atto", "num_classes": 3, "options": {}, "random_init": True}
    logits = module.apply(variables, np.zeros((1, 32, 64, 3), np.float32), train=False)
    assert logits.shape == (1, 32, 64, 3)
    again = checkpoint.open_model("upernet_convnext_atto", random_init=True, num_classes=3, image_size=(32, 64), seed=1)[1]
    assert again is variables  # one initialisation per process
    other = checkpoint.open_model("upernet_convnext_atto", random_init=True, num_classes=3, image_size=(32, 64), seed=2)[1]
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(variables)))

    saved = checkpoint.save_variables(tmp_path / "ckpt", variables, {"model": "upernet_convnext_atto", "num_classes": 3})
    loaded_module, loaded, loaded_metadata = checkpoint.open_model(saved, num_classes=99)  # K from the checkpoint
    assert loaded_metadata["num_classes"] == 3 and type(loaded_module) is type(module)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("source, kwargs, error, text", [
    ("upernet_convnext_atto", {}, ValueError, "has no weights"),
    ("upernet_convnext_atto", {"random_init": True}, ValueError, "needs the number of classes"),
    ("no_such_model", {"random_init": True, "num_classes": 3}, ValueError, "neither a checkpoint directory"),
    ("missing/dir", {}, FileNotFoundError, "does not exist"),
])
def test_open_model_names_the_problem(source, kwargs, error, text):
    from jaxseg import checkpoint

    with pytest.raises(error, match=text):
        checkpoint.open_model(source, option="--model", **kwargs)


def test_open_model_refuses_a_file(tmp_path):
    from jaxseg import checkpoint

    path = tmp_path / "weights.npz"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="--checkpoint .* is a file"):
        checkpoint.open_model(path, option="--checkpoint")


def test_evaluate_takes_its_defaults_from_a_config(tmp_path):
    """``--config``: the evaluate and data sections fill what the command leaves unset; given options win."""
    from jaxseg.evaluation_run import resolve_options

    resolved = resolve_options({"config": "pirat_voc", "overrides": ["evaluate.iterations=7"], "model": "m",
                                "random_init": True, "attack": None, "eps": None, "norm": None, "iterations": None,
                                "batch_size": 4, "dataset": None, "arrays": None, "split": None, "data_dir": None,
                                "protocol": None, "image_size": None, "num_examples": None, "num_classes": None})
    assert resolved["attack"] == "sea" and resolved["iterations"] == 7 and resolved["batch_size"] == 4
    assert [round(float(e) * 255, 6) for e in resolved["eps"].split(",")] == [4, 8, 12]
    assert (resolved["dataset"], resolved["split"], resolved["protocol"], resolved["image_size"]) == (
        "voc2012_seg", "validation", "sea", 473)
    assert resolved["num_classes"] == 21 and resolved["num_examples"] is None
    assert resolved["config"] == {"name": "pirat_voc", "overrides": ["evaluate.iterations=7"]}
    no_config = resolve_options({"model": "m", "attack": None, "eps": None, "norm": None, "batch_size": None,
                                 "split": None, "arrays": "a.npz"})
    assert (no_config["attack"], no_config["eps"], no_config["norm"], no_config["batch_size"]) == (
        "sea", "4/255", "linf", 8)
    with pytest.raises(ValueError, match="--config.. overrides need --config"):
        resolve_options({"overrides": ["evaluate.iterations=2"]})
    with pytest.raises(ValueError, match="config has no field 'evaluate.steps'"):
        resolve_options({"config": "synthetic", "overrides": ["evaluate.steps=2"]})


def test_cli_evaluate_with_a_config(tmp_path):
    images, labels = make_data(seed=3, count=4, size=32, block=8)
    arrays = tmp_path / "data.npz"
    np.savez(arrays, images=images, labels=labels)
    out = tmp_path / "eval"
    code = main(["evaluate", "--model", "upernet_convnext_atto", "--random-init", "--arrays", str(arrays),
                 "--config", "synthetic:quick", "--config.evaluate.attack=apgd", "--config.evaluate.eps=(2/255,)",
                 "--config.evaluate.iterations=1", "--batch-size", "2", "--num-examples", "2", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["attack"] == "apgd" and results["iterations"] == 1 and results["num_examples"] == 2
    assert [r["eps_255"] for r in results["robust"]] == pytest.approx([2])
    assert results["config"] == {"name": "synthetic:quick", "overrides": [
        "evaluate.attack=apgd", "evaluate.eps=(2/255,)", "evaluate.iterations=1"]}
