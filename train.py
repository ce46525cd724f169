"""`python train.py [experiment=NAME] [key=value ...]`: see conf/train.yaml, README.md and docs/training.md."""

from lsgtrain.train import main

if __name__ == "__main__":
    main()
