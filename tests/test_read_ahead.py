import threading

import pytest

from preprocess.read_ahead import read_ahead


def test_items_come_in_order_and_all_of_them():
    assert list(read_ahead(iter(range(50)))) == list(range(50))
    assert list(read_ahead(iter([]))) == []


def test_an_error_comes_out_after_the_items_before_it():
    def items():
        yield "first"
        yield "second"
        raise ValueError("row 3 is bad")

    got = []
    with pytest.raises(ValueError, match="row 3 is bad"):
        for item in read_ahead(items()):
            got.append(item)
    assert got == ["first", "second"]


def test_reading_runs_at_most_one_item_ahead_and_stops_with_the_consumer():
    produced = []
    released = threading.Event()

    def items():
        for i in range(100):
            produced.append(i)
            yield i
        released.set()

    reader = read_ahead(items())
    assert next(reader) == 0
    reader.close()
    # The item handed over, one waiting in the queue, one the thread holds.
    assert len(produced) <= 3
    assert not released.is_set()


def items_that_set_when_closed(closed: threading.Event):
    try:
        for i in range(100):
            yield i
    finally:  # a with-block's exit, say tokenizer processes closing
        closed.set()


def test_a_generator_left_mid_way_is_closed_so_what_it_holds_ends():
    closed = threading.Event()
    reader = read_ahead(items_that_set_when_closed(closed))
    assert next(reader) == 0
    reader.close()
    assert closed.wait(timeout=5)


def test_reading_starts_when_made_not_when_first_asked():
    started = threading.Event()

    def items():
        started.set()
        yield 1

    reader = read_ahead(items())
    assert started.wait(timeout=5)  # e.g. the first chunk tokenises while a model loads
    assert list(reader) == [1]


def test_a_reader_never_consumed_is_let_go_and_closes_its_items():
    closed = threading.Event()
    read_ahead(items_that_set_when_closed(closed)).close()
    assert closed.wait(timeout=5)


def test_a_reader_dropped_unfinished_lets_its_thread_go():
    import gc

    closed = threading.Event()
    reader = read_ahead(items_that_set_when_closed(closed))
    assert next(reader) == 0
    del reader
    gc.collect()
    assert closed.wait(timeout=5)
