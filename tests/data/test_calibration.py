import pytest
import torch

from optimum_layerwise.data.calibration import batch_windows, calibration_batches, token_windows


class WordTokenizer:
    """A real-enough tokenizer for calibration tests: one id per whitespace-separated word, BOS = 1."""

    pad_token_id = 0

    def __call__(self, text):
        return {"input_ids": [1] + [2 + len(word) for word in text.split()]}


def test_windows_split_long_sequences_and_keep_the_tail():
    windows = token_windows([list(range(10))], num_samples=10, seq_len=4)
    assert windows == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_windows_subset_is_seeded_and_in_document_order():
    sequences = [list(range(100))]
    first = token_windows(sequences, num_samples=5, seq_len=4, seed=3)
    assert first == token_windows(sequences, num_samples=5, seq_len=4, seed=3)
    assert first != token_windows(sequences, num_samples=5, seq_len=4, seed=4)
    assert [w[0] for w in first] == sorted(w[0] for w in first)


def test_every_window_starts_with_bos_when_the_tokenizer_adds_it():
    class BosTokenizer(WordTokenizer):
        bos_token_id = 1

    text = " ".join(["a", "bb", "ccc"] * 4)  # one document: BOS + 12 words
    windows = token_windows([text], BosTokenizer(), num_samples=10, seq_len=5)
    assert windows == [[1, 3, 4, 5, 3], [1, 4, 5, 3, 4], [1, 5, 3, 4, 5]]
    assert token_windows([text], WordTokenizer(), num_samples=10, seq_len=5)[1] == [4, 5, 3, 4, 5]  # no BOS id


def test_texts_need_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        token_windows(["some text"])
    assert token_windows(["a bb ccc"], WordTokenizer()) == [[1, 3, 4, 5]]


def test_text_file_path(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("one two three", encoding="utf-8")
    assert token_windows(str(path), WordTokenizer()) == [[1, 5, 5, 7]]


def test_tensor_input_and_padding_mask():
    batches = calibration_batches(torch.arange(12).view(2, 6), num_samples=8, seq_len=4, batch_size=8)
    assert len(batches) == 1
    batch = batches[0]
    assert batch.input_ids.tolist() == [[0, 1, 2, 3], [4, 5, 0, 0], [6, 7, 8, 9], [10, 11, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.num_tokens == 12


def test_batches_use_the_tokenizer_pad_id():
    tokenizer = WordTokenizer()
    tokenizer.pad_token_id = 7
    (batch,) = batch_windows([[1, 2], [3]], batch_size=2, pad_token_id=tokenizer.pad_token_id)
    assert batch.input_ids.tolist() == [[1, 2], [3, 7]]


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("no/such/file.txt", "neither a known corpus"),
        ([[1, 2], []], "non-empty token-id"),
        ([1.5, 2.5], "non-empty token-id"),
        (torch.zeros(3), "2-D integer"),
        (42, "dataset"),
        (["   "], "no tokens"),
    ],
)
def test_bad_datasets(dataset, message):
    with pytest.raises(ValueError, match=message):
        token_windows(dataset, WordTokenizer())


def test_bad_sizes():
    with pytest.raises(ValueError, match="num_samples"):
        token_windows([[1, 2]], num_samples=0)
