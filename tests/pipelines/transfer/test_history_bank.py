import numpy as np
import pytest
import torch

from fedtwin.pipelines.transfer.history_bank import HistoryBank, signatures


def _clips(ids):
    """Tiny (N, T=1, C=1, H=1, W=2) uint8 clips that encode an id, so stored items can be traced."""
    ids = np.asarray(ids)
    return np.stack([ids // 256, ids % 256], axis=-1).astype(np.uint8).reshape(len(ids), 1, 1, 1, 2)


def _ids(clips):
    return clips[:, 0, 0, 0, 0].astype(np.int64) * 256 + clips[:, 0, 0, 0, 1]


def test_signature_is_the_closed_form_head_gradient():
    # Prepare: by hand, p - onehot(1) = [0.2, -0.5, 0.3]; outer product with feat [1, 2]
    probs = np.array([[0.2, 0.5, 0.3]])
    feats = np.array([[1.0, 2.0]])

    # Execute
    sig = signatures(probs, np.array([1]), feats)

    # Assert
    np.testing.assert_allclose(sig, [[0.2, 0.4, -0.5, -1.0, 0.3, 0.6]], rtol=1e-6)


def test_signature_equals_autograd_of_cross_entropy_on_a_linear_head():
    # Prepare
    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(4, 3)
    feats = torch.randn(5, 4, generator=gen)
    labels = torch.tensor([0, 2, 1, 1, 0])

    # Execute: per-sample autograd gradients of the head weight
    expected = []
    for f, y in zip(feats, labels):
        head.zero_grad()
        torch.nn.functional.cross_entropy(head(f[None]), y[None]).backward()
        expected.append(head.weight.grad.reshape(-1).clone())
    probs = torch.softmax(head(feats), dim=1).detach().numpy()
    sig = signatures(probs, labels.numpy(), feats.numpy())

    # Assert
    np.testing.assert_allclose(sig, torch.stack(expected).numpy(), atol=1e-6)


@pytest.mark.parametrize("policy", ["gss", "reservoir"])
def test_bank_respects_size_and_class_quota_under_many_random_adds(policy):
    # Prepare: 4 classes, capacity 22 -> quota 5; a skewed stream in uneven chunks
    rng = np.random.default_rng(3)
    bank = HistoryBank(capacity=22, num_classes=4, policy=policy, n_compare=8)
    label_of, next_id = {}, 0
    seen = np.zeros(4, dtype=int)

    for _ in range(60):
        n = int(rng.integers(1, 12))
        labels = rng.choice(4, size=n, p=[0.55, 0.3, 0.1, 0.05])
        ids = np.arange(next_id, next_id + n)
        label_of.update(zip(ids.tolist(), labels.tolist()))
        next_id += n
        seen += np.bincount(labels, minlength=4)

        # Execute
        outcome = bank.add(_clips(ids), labels, rng.normal(size=(n, 6)), rng)

        # Assert: size, quota, bookkeeping and clip/label integrity after every call
        comp = bank.composition()
        assert len(bank) <= 20  # 4 classes * quota 5 < capacity 22
        assert comp.max() <= bank.quota == 5
        np.testing.assert_array_equal(comp, np.minimum(seen, 5))  # under quota, a class fills up first
        np.testing.assert_array_equal(comp, np.bincount(bank.labels, minlength=4))
        assert [label_of[i] for i in _ids(bank.clips)] == bank.labels.tolist()
        assert sum(outcome) == n
    assert len(set(_ids(bank.clips).tolist())) == len(bank)  # no item stored twice
    assert next_id > 300


@pytest.mark.parametrize("policy", ["gss", "reservoir"])
def test_bank_without_quota_fills_to_capacity_and_stops(policy):
    rng = np.random.default_rng(4)
    bank = HistoryBank(capacity=15, num_classes=3, policy=policy, per_class_quota=False)

    first = bank.add(_clips(np.arange(10)), np.zeros(10, dtype=int), rng.normal(size=(10, 4)), rng)
    bank.add(_clips(np.arange(10, 200)), rng.integers(0, 3, size=190), rng.normal(size=(190, 4)), rng)

    assert first == (10, 0, 0)
    assert len(bank) == 15
    assert bank.composition().sum() == 15


@pytest.mark.parametrize("per_class_quota", [True, False])
def test_reservoir_keeps_every_stream_item_with_equal_probability(per_class_quota):
    # Prepare: capacity 5 over a stream of 20 -> inclusion probability 0.25 for every position
    hits = np.zeros(20)
    trials = 400

    for seed in range(trials):
        rng = np.random.default_rng(seed)
        bank = HistoryBank(capacity=5, num_classes=1, policy="reservoir", per_class_quota=per_class_quota)

        # Execute
        bank.add(_clips(np.arange(20)), np.zeros(20, dtype=int), None, rng)
        hits[_ids(bank.clips)] += 1

    # Assert: binomial sd = sqrt(.25*.75/400) ~ 0.022; early and late items alike
    np.testing.assert_allclose(hits / trials, 0.25, atol=0.08)


def test_gss_keeps_a_rare_direction_in_a_duplicate_heavy_stream():
    # Prepare: 300 noisy copies of direction e1, with 5 samples along e2 arriving once the bank is full
    dim, capacity = 8, 10
    e1, e2 = np.eye(dim)[0], np.eye(dim)[1]
    rare_at = {40, 90, 140, 190, 240}
    kept = {"gss": [], "reservoir": []}

    for seed in range(10):
        for policy in kept:
            rng = np.random.default_rng(seed)
            noise = 0.05 * rng.normal(size=(300, dim))
            sigs = np.array([e2 if i in rare_at else e1 for i in range(300)]) + noise
            bank = HistoryBank(capacity, num_classes=1, policy=policy, per_class_quota=False)

            # Execute: one sample at a time, as a stream
            for i in range(300):
                bank.add(_clips([i]), [0], sigs[i : i + 1], rng)

            kept[policy].append(len(rare_at & set(_ids(bank.clips).tolist())))

    # Assert: GSS always holds the rare direction; uniform sampling expects 5 * 10/300 ~ 0.17 of them
    assert min(kept["gss"]) >= 1
    assert np.mean(kept["reservoir"]) < 0.5


def test_gss_draws_the_victim_in_proportion_to_score_plus_one():
    # Prepare: bank [A (score 0: bank was empty), B = copy of A (score 1)]; x has cosine 0.5 to both.
    # Victim A (weight 1) keeps the bank since 0.5 >= 0; victim B (weight 2) is replaced: P = 2/3.
    a, x = np.array([[1.0, 0.0]]), np.array([[0.5, np.sqrt(0.75)]])
    replaced = 0
    trials = 600

    for seed in range(trials):
        rng = np.random.default_rng(seed)
        bank = HistoryBank(capacity=2, num_classes=1, per_class_quota=False)
        bank.add(_clips([0, 1]), [0, 0], np.vstack([a, a]), rng)

        # Execute
        outcome = bank.add(_clips([2]), [0], x, rng)

        # Assert (per trial): only B can ever be the one replaced
        assert 0 in _ids(bank.clips)
        replaced += outcome.replaced

    # Assert: binomial sd ~ 0.019; a uniform victim would give 0.5
    assert replaced / trials == pytest.approx(2 / 3, abs=0.06)


def test_cycle_batches_walks_every_item_once_per_pass():
    # Prepare
    rng = np.random.default_rng(0)
    bank = HistoryBank(capacity=10, num_classes=2, policy="reservoir")
    bank.add(_clips(np.arange(5)), np.array([0, 1, 0, 1, 0]), None, rng)

    # Execute: 5 batches of 2 = two full passes over 5 items
    cycle = bank.cycle_batches(2, rng)
    batches = [next(cycle) for _ in range(5)]
    big = next(bank.cycle_batches(7, rng))

    # Assert
    order = np.concatenate([_ids(clips) for clips, _ in batches])
    assert all(len(clips) == 2 and len(labels) == 2 for clips, labels in batches)
    assert sorted(order[:5]) == [0, 1, 2, 3, 4]
    assert sorted(order[5:]) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(np.concatenate([lab for _, lab in batches]), order % 2)
    assert len(big[0]) == 7 and set(_ids(big[0]).tolist()) == {0, 1, 2, 3, 4}


def test_sample_batch_draws_distinct_items():
    rng = np.random.default_rng(1)
    bank = HistoryBank(capacity=8, num_classes=2, policy="reservoir")
    bank.add(_clips(np.arange(6)), np.array([0, 0, 0, 1, 1, 1]), None, rng)

    clips, labels = bank.sample_batch(4, rng)

    ids = _ids(clips)
    assert len(set(ids.tolist())) == 4
    np.testing.assert_array_equal(labels, (ids >= 3).astype(int))
    with pytest.raises(ValueError, match="batch_size=7"):
        bank.sample_batch(7, rng)


def test_bad_input_is_rejected_with_a_clear_message():
    rng = np.random.default_rng(0)
    bank = HistoryBank(capacity=8, num_classes=2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        bank.add(_clips([0]), [2], np.ones((1, 3)), rng)
    with pytest.raises(ValueError, match="needs signatures"):
        bank.add(_clips([0]), [1], None, rng)
    with pytest.raises(ValueError, match="uint8"):
        bank.add(np.zeros((1, 1, 1, 1, 2), dtype=np.float32), [1], np.ones((1, 3)), rng)
    with pytest.raises(ValueError, match="policy='fifo'"):
        HistoryBank(8, 2, policy="fifo")
    with pytest.raises(ValueError, match="quota of 0"):
        HistoryBank(3, 4)


@pytest.mark.parametrize("policy", ["gss", "reservoir"])
def test_state_dict_round_trip_continues_exactly_like_the_original(policy):
    # Prepare: fill a bank past capacity, snapshot it, and feed both banks the same continuation
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 40)
    sigs = rng.standard_normal((40, 5))
    bank = HistoryBank(capacity=9, num_classes=3, policy=policy, n_compare=4)
    bank.add(_clips(np.arange(25)), labels[:25], sigs[:25], np.random.default_rng(0))
    restored = HistoryBank(capacity=9, num_classes=3, policy=policy, n_compare=4)

    # Execute
    restored.load_state_dict(bank.state_dict())
    out_a = bank.add(_clips(np.arange(25, 40)), labels[25:], sigs[25:], np.random.default_rng(1))
    out_b = restored.add(_clips(np.arange(25, 40)), labels[25:], sigs[25:], np.random.default_rng(1))

    # Assert
    assert out_a == out_b
    np.testing.assert_array_equal(_ids(bank.clips), _ids(restored.clips))
    np.testing.assert_array_equal(bank.labels, restored.labels)
    np.testing.assert_array_equal(bank.composition(), restored.composition())
    with pytest.raises(ValueError, match="capacity 4"):
        HistoryBank(capacity=4, num_classes=3, policy=policy).load_state_dict(bank.state_dict())
