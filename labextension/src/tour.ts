/**
 * The tour card: copy the guided notebooks into a folder through the contents API (never
 * overwriting one already there, which may hold the learner's own edits), then say which to open.
 */

import { FtkitApi } from './api';
import { joinPath, TOUR_START } from './model';

/** The two calls of JupyterLab's contents service the copy needs (ContentsManager has both). */
export interface IContentsLike {
  /** whether `path` exists (a file or a folder) */
  exists(path: string): Promise<boolean>;
  /** write a notebook (nbformat JSON) at `path` */
  saveNotebook(path: string, content: any): Promise<void>;
}

export interface ITourCopy {
  /** the notebook to open: `<folder>/00_quickstart.ipynb` */
  open: string;
  copied: string[];
  /** already there: left as they are */
  kept: string[];
}

export async function copyTour(api: Pick<FtkitApi, 'tour'>, contents: IContentsLike, folder: string): Promise<ITourCopy> {
  const { notebooks } = await api.tour();
  if (!notebooks || notebooks.length === 0) {
    throw new Error("the server listed no tour notebooks (GET ftkit/api/tour): is ftkit's tour installed?");
  }
  const copied: string[] = [];
  const kept: string[] = [];
  for (const nb of notebooks) {
    // A name from the server is one file name, never a path: nothing lands outside `folder`.
    const name = nb.name.split('/').pop() || nb.name;
    const path = joinPath(folder, name);
    if (await contents.exists(path)) {
      kept.push(path);
    } else {
      await contents.saveNotebook(path, nb.content);
      copied.push(path);
    }
  }
  const start = notebooks.find(nb => nb.name.endsWith(TOUR_START)) ? TOUR_START : notebooks[0].name.split('/').pop()!;
  return { open: joinPath(folder, start), copied, kept };
}
