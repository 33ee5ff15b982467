"""The chunked cosine kNN of knn_eval.py against scikit-learn and a naive vote written here."""
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from knn_eval import knn_neighbours, knn_predict, majority_vote

# (test_chunk, train_chunk): blocks that split both sets unevenly, blocks smaller than k (the running
# top-k is then built from several blocks), single rows, and one block larger than everything.
CHUNKS = [(7, 13), (1, 3), (50, 1), (16, 101), (4096, 4096)]


def _random_set(n_train=101, n_test=53, dim=12, num_classes=4, seed=0):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(n_train, dim))
    test = rng.normal(size=(n_test, dim))
    labels = rng.integers(0, num_classes, size=n_train)
    return train, test, labels


def _sklearn(train, labels, test, k):
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(train, labels)
    return clf


@pytest.mark.parametrize("test_chunk,train_chunk", CHUNKS)
def test_neighbour_indices_match_sklearn(test_chunk, train_chunk):
    train, test, labels = _random_set()
    k = 5
    clf = _sklearn(train, labels, test, k)
    _, ref_idx = clf.kneighbors(test, n_neighbors=k)             # sorted nearest first
    t_train = torch.nn.functional.normalize(torch.from_numpy(train), dim=1)
    t_test = torch.nn.functional.normalize(torch.from_numpy(test), dim=1)
    sims, idx = knn_neighbours(t_train, t_test, k, test_chunk=test_chunk, train_chunk=train_chunk)
    np.testing.assert_array_equal(idx.numpy(), ref_idx)
    # the similarities are the cosines of those pairs, in decreasing order
    ref_cos = 1.0 - clf.kneighbors(test, n_neighbors=k)[0]
    np.testing.assert_allclose(sims.numpy(), ref_cos, atol=1e-12)
    assert (sims[:, :-1] >= sims[:, 1:]).all()


@pytest.mark.parametrize("test_chunk,train_chunk", CHUNKS)
def test_k1_matches_sklearn_multiclass(test_chunk, train_chunk):
    # k=1 cannot tie in the vote; random Gaussian features make distance ties impossible in practice
    train, test, labels = _random_set(num_classes=6, seed=1)
    ref = _sklearn(train, labels, test, 1).predict(test)
    preds = knn_predict(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(test), [1],
                        test_chunk=test_chunk, train_chunk=train_chunk)
    np.testing.assert_array_equal(preds[1].numpy(), ref)


@pytest.mark.parametrize("test_chunk,train_chunk", CHUNKS)
def test_k5_matches_sklearn_two_classes(test_chunk, train_chunk):
    # two classes and an odd k: a vote tie cannot occur, so sklearn's own tie rule (smallest label,
    # scipy's mode) never decides anything and the predictions must agree exactly
    train, test, labels = _random_set(num_classes=2, seed=2)
    ref = _sklearn(train, labels, test, 5).predict(test)
    preds = knn_predict(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(test), [1, 5],
                        test_chunk=test_chunk, train_chunk=train_chunk)
    np.testing.assert_array_equal(preds[5].numpy(), ref)
    np.testing.assert_array_equal(preds[1].numpy(), _sklearn(train, labels, test, 1).predict(test))


def test_k5_matches_sklearn_where_no_vote_tie_float32():
    # several classes: compare on the rows whose 5 neighbours have a unique most frequent label
    # (found with sklearn's neighbours), the float32 path the CLI uses, features not pre-normalised
    train, test, labels = _random_set(n_train=300, n_test=120, dim=32, num_classes=5, seed=3)
    train = train * np.random.default_rng(9).uniform(0.1, 10, size=(len(train), 1))
    clf = _sklearn(train, labels, test, 5)
    ref = clf.predict(test)
    _, ref_idx = clf.kneighbors(test)
    untied = []
    for row in labels[ref_idx]:
        counts = sorted(Counter(row.tolist()).values(), reverse=True)
        untied.append(len(counts) == 1 or counts[0] > counts[1])
    untied = np.array(untied)
    assert 30 < untied.sum() < len(untied)                     # both kinds of rows are present
    preds = knn_predict(torch.from_numpy(train).float(), torch.from_numpy(labels),
                        torch.from_numpy(test).float(), [5], test_chunk=17, train_chunk=64)[5].numpy()
    np.testing.assert_array_equal(preds[untied], ref[untied])


def _naive_vote(row):
    counts = Counter(row)
    top = max(counts.values())
    return next(label for label in row if counts[label] == top)   # first (nearest) of the tied classes


def test_majority_vote_against_naive_loop():
    rng = np.random.default_rng(4)
    for k in (1, 2, 3, 4, 6, 10):
        rows = rng.integers(0, 4, size=(200, k))
        got = majority_vote(torch.from_numpy(rows), num_classes=4).numpy()
        np.testing.assert_array_equal(got, [_naive_vote(r.tolist()) for r in rows])


def test_crafted_tie_goes_to_nearest_neighbour():
    # test points on the unit circle; neighbours at growing angles, so the order is known
    def at(angle):
        return [np.cos(angle), np.sin(angle)]

    train = np.array([at(0.1), at(0.2), at(0.3), at(0.4), at(2.0), at(2.1), at(2.2)])
    labels = np.array([2, 1, 1, 2, 0, 0, 0])
    test = np.array([at(0.0)])
    preds = knn_predict(torch.tensor(train), torch.tensor(labels), torch.tensor(test), [1, 2, 3, 4],
                        test_chunk=1, train_chunk=2)
    assert preds[1].item() == 2        # nearest
    assert preds[2].item() == 2        # 1-1 tie between classes 2 and 1: class 2 is nearer
    assert preds[3].item() == 1        # 2 votes beat 1, although class 2 is nearest
    assert preds[4].item() == 2        # 2-2 tie: the nearest neighbour's class wins
    # scikit-learn resolves the same 2-2 tie toward the smallest label, which is why the sklearn
    # comparisons above avoid vote ties
    assert _sklearn(train, labels, test, 4).predict(test)[0] == 1


def test_k_larger_than_training_set_is_an_error():
    train, test, labels = _random_set(n_train=4)
    with pytest.raises(ValueError, match="k=5"):
        knn_predict(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(test), [5])
