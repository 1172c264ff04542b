"""Faithfulness helpers: deletion/insertion find a known region, randomization destroys model-based maps."""

import numpy as np
import pytest
import torch
from torch import nn

from auditsvc.battery.methods import attribution
from auditsvc.battery.methods import saliency_checks as faithfulness
from auditsvc.battery.model.graph import ModelGraph
from auditsvc.demo.nets import PlainNet, export

SIZE = (1, 16, 16)
REGION = (slice(4, 8), slice(10, 14))   # rows, columns of the only pixels the model reads


def region_model() -> ModelGraph:
    """Class 1's logit grows with the brightness of one 4x4 region, class 0's is fixed; nothing else counts."""
    weight = torch.zeros(2, *SIZE)
    weight[1, 0, REGION[0], REGION[1]] = 0.5
    model = nn.Sequential(nn.Flatten(), nn.Linear(SIZE[0] * SIZE[1] * SIZE[2], 2))
    model[1].weight.data = weight.flatten(1)
    model[1].bias.data = torch.tensor([0.0, -4.0])
    return ModelGraph(export(model.eval(), SIZE), SIZE)


def bright_region_images(count: int) -> torch.Tensor:
    images = torch.randn(count, *SIZE, generator=torch.Generator().manual_seed(0)) * 0.3
    images[:, 0, REGION[0], REGION[1]] += 1.0
    return images


def test_deletion_and_insertion_rank_the_known_region_above_random():
    graph = region_model()
    inputs = bright_region_images(6)
    targets = torch.ones(6, dtype=torch.long)
    maps = attribution.heatmap(attribution.gradient(graph, inputs, targets)).numpy()
    assert maps[:, REGION[0], REGION[1]].min() > maps.max() * 0.99 > 0  # the gradient marks exactly the region
    pixels = SIZE[1] * SIZE[2]
    ranks = np.stack([faithfulness.pixel_ranks(maps, seed=0), faithfulness.random_ranks(6, pixels, seed=1)], axis=1)
    fractions = faithfulness.switch_fractions(12)
    probability = faithfulness.class_probability(graph)
    deletion = faithfulness.reveal_curves(probability, inputs, torch.zeros_like(inputs), ranks, targets, fractions, 8)
    canvas = faithfulness.blurred(inputs, 2.0)
    insertion = faithfulness.reveal_curves(probability, canvas, inputs, ranks, targets, fractions, 8)
    assert deletion.shape == (6, 2, 13)
    np.testing.assert_allclose(deletion[:, 0, 0], deletion[:, 1, 0])  # both rankings start from the same image
    deletion_auc = faithfulness.area_under(deletion, fractions).mean(axis=0)
    insertion_auc = faithfulness.area_under(insertion, fractions).mean(axis=0)
    assert deletion_auc[0] < deletion_auc[1] - 0.2      # removing the region first kills the class at once
    assert insertion_auc[0] > insertion_auc[1] + 0.1    # revealing it first restores the class at once


def test_pixel_ranks_break_ties_at_random_not_in_raster_order():
    flat = np.zeros((1, 8, 8))
    ranks = faithfulness.pixel_ranks(flat, seed=0)[0]
    assert sorted(ranks) == list(range(64))
    assert ranks[:8].mean() > 8  # the top row is not simply first


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(0)
    size = (3, 32, 32)
    return ModelGraph(export(PlainNet(3, widths=(8, 16)).eval(), size), size)


def sobel_edges(inputs: torch.Tensor) -> np.ndarray:
    """An 'explanation' computed from the input alone."""
    grey = inputs.mean(dim=1).numpy()
    return np.hypot(np.gradient(grey, axis=1), np.gradient(grey, axis=2))


def test_randomizing_all_layers_destroys_gradient_maps_but_not_an_input_only_map(small_net):
    inputs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = small_net(inputs).argmax(dim=1)
    layers = faithfulness.weighted_layers(small_net)
    assert [layer.name for layer in layers][0] == "classifier"  # from the output backward
    random_net = faithfulness.randomized_graph(
        small_net, faithfulness.random_weights(small_net, layers, torch.Generator().manual_seed(2)))
    before = attribution.heatmap(attribution.gradient(small_net, inputs, targets)).numpy()
    after = attribution.heatmap(attribution.gradient(random_net, inputs, targets)).numpy()
    gradient_similarity = np.mean([faithfulness.rank_correlation(a, b) for a, b in zip(before, after)])
    edges = sobel_edges(inputs)  # the same before and after: the model never enters
    edge_similarity = np.mean([faithfulness.rank_correlation(a, a.copy()) for a in edges])
    assert gradient_similarity < 0.3 and edge_similarity == pytest.approx(1.0)
    assert np.mean([faithfulness.ssim(a, b) for a, b in zip(before, after)]) < 0.3
    assert faithfulness.ssim(edges[0], edges[0]) == pytest.approx(1.0)


def test_the_randomized_copy_leaves_the_audited_graph_alone(small_net):
    inputs = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    logits = small_net(inputs)
    weights = {name: tensor.clone() for name, tensor in small_net.weights().items()}
    [top, *_] = faithfulness.weighted_layers(small_net)
    copy = faithfulness.randomized_graph(
        small_net, faithfulness.random_weights(small_net, [top], torch.Generator().manual_seed(4)))
    assert not torch.allclose(copy(inputs), logits)
    torch.testing.assert_close(small_net(inputs), logits)
    for name, tensor in small_net.weights().items():
        torch.testing.assert_close(tensor, weights[name])
    # Only the chosen layer changed: the copy's features before it are the model's.
    layer = small_net.penultimate_layer().name
    torch.testing.assert_close(copy.activations(inputs, [layer])[1][layer],
                               small_net.activations(inputs, [layer])[1][layer])


def test_a_constant_map_has_no_rank_correlation():
    assert faithfulness.rank_correlation(np.ones((4, 4)), np.random.default_rng(0).random((4, 4))) == 0.0


def test_curves_and_integrated_gradients_do_not_depend_on_the_batch_size(small_net):
    """The checks pick the batch size that runs fastest; the numbers must be the same whatever it is."""
    inputs = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    targets = torch.tensor([0, 1, 2, 0, 1])
    ranks = np.stack([faithfulness.random_ranks(5, 32 * 32, seed=s) for s in (1, 2)], axis=1)
    fractions = faithfulness.switch_fractions(6)
    probability = faithfulness.class_probability(small_net)
    curves = [faithfulness.reveal_curves(probability, inputs, torch.zeros_like(inputs), ranks, targets, fractions,
                                         chunk) for chunk in (64, 3)]
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-5, atol=1e-6)
    black = torch.full((1, 3, 1, 1), -2.0)
    maps = [attribution.integrated_gradients(small_net, inputs, targets, baseline=black, steps=8, chunk=chunk,
                                             first_steps=8).values for chunk in (64, 4)]
    torch.testing.assert_close(maps[0], maps[1], rtol=1e-4, atol=1e-6)


def test_the_batch_shrinks_for_models_with_large_maps(small_net):
    assert faithfulness.efficient_batch(small_net, 64) == 64          # 8 x 32 x 32 floats per image: any batch
    wide = ModelGraph(export(PlainNet(2, widths=(256,)).eval(), (3, 128, 128)), (3, 128, 128))
    largest = 256 * 128 * 128 * 4
    assert faithfulness.efficient_batch(wide, 64) == faithfulness.CACHE_FRIENDLY_BYTES // largest == 2
    assert faithfulness.efficient_batch(wide, 1) == 1
