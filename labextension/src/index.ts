/**
 * ftkit's JupyterLab front end: the "Fine-tuning runs" sidebar, a report tab per run, and two
 * launcher cards (the guided tour, a new fine-tuning notebook), each also a palette command.
 *
 * It talks only to the server's REST API: ftkit's own (`{base}/ftkit/api/...`, see api.ts) and
 * JupyterLab's contents API to write the notebooks it creates. It never reads run folders,
 * never starts or talks to a kernel.
 */

import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, Notification, WidgetTracker } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { FtkitApi } from './api';
import { ftkitIcon } from './icon';
import {
  compareNotebook,
  DEFAULT_SETTINGS,
  freeName,
  INotebookContent,
  IPollSettings,
  loadRunSnippet,
  starterNotebook
} from './model';
import { RunsPoller } from './poller';
import { ReportView } from './report';
import { RunsSidebar } from './sidebar';
import { copyTour, IContentsLike } from './tour';

const PLUGIN_ID = 'ftkit-labextension:plugin';

export namespace CommandIDs {
  export const showRuns = 'ftkit:show-runs';
  export const tour = 'ftkit:open-tour';
  export const newNotebook = 'ftkit:new-notebook';
  export const openReport = 'ftkit:open-report';
  export const insertLoadRun = 'ftkit:insert-load-run';
  export const stopRun = 'ftkit:stop-run';
  export const compareRuns = 'ftkit:compare-runs';
  export const refreshRuns = 'ftkit:refresh-runs';
}

const CATEGORY = 'ftkit';

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Fine-tuning runs sidebar, run reports, and ftkit launcher cards.',
  autoStart: true,
  optional: [ISettingRegistry, INotebookTracker, ILauncher, ICommandPalette, IDefaultFileBrowser, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    settingRegistry: ISettingRegistry | null,
    notebooks: INotebookTracker | null,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    browser: IDefaultFileBrowser | null,
    restorer: ILayoutRestorer | null
  ) => {
    const serverSettings = app.serviceManager.serverSettings;
    const api = new FtkitApi(serverSettings.baseUrl, (url, init) =>
      ServerConnection.makeRequest(url, init, serverSettings)
    );
    const contents = app.serviceManager.contents;
    const files: IContentsLike = {
      exists: async path => {
        try {
          await contents.get(path, { content: false });
          return true;
        } catch (error) {
          if ((error as ServerConnection.ResponseError)?.response?.status === 404) {
            return false;
          }
          throw error;
        }
      },
      saveNotebook: async (path, content) => {
        await contents.save(path, { type: 'notebook', format: 'json', content });
      }
    };
    const currentFolder = () => browser?.model.path ?? '';
    const open = (path: string) => app.commands.execute('docmanager:open', { path, factory: 'Notebook' });
    const kernelFor = (nb: INotebookContent): INotebookContent => {
      // The server's default kernel, so the notebook opens without asking which one.
      const specs = app.serviceManager.kernelspecs.specs;
      const spec = specs?.default ? specs.kernelspecs[specs.default] : undefined;
      if (spec) {
        nb.metadata.kernelspec = { name: spec.name, display_name: spec.display_name, language: spec.language };
      }
      return nb;
    };
    const createNotebook = async (stem: string, nb: INotebookContent): Promise<string> => {
      const path = await freeName(currentFolder(), stem, files.exists);
      await files.saveNotebook(path, kernelFor(nb));
      await open(path);
      return path;
    };

    // --- settings and polling ----------------------------------------------------------------
    let settings: IPollSettings = { ...DEFAULT_SETTINGS };
    const sidebar = new RunsSidebar({
      openReport: run => app.commands.execute(CommandIDs.openReport, { id: run.id, name: run.name }),
      insertLoadRun: run => app.commands.execute(CommandIDs.insertLoadRun, { id: run.id }),
      stop: async run => {
        await api.stop(run.id);
        // See the run end as soon as it does: the next polls come at the fast rate anyway.
        void poller.refresh();
      },
      compare: async ids => {
        await app.commands.execute(CommandIDs.compareRuns, { ids });
      },
      refresh: () => poller.refresh(),
      visibility: visible => (visible ? void poller.start() : poller.stop())
    });
    const poller = new RunsPoller(
      () => api.runs(),
      () => settings,
      runs => sidebar.setRuns(runs),
      error => sidebar.showError(`Cannot list runs: ${message(error)}`)
    );
    sidebar.id = 'ftkit-runs-sidebar';
    sidebar.title.icon = ftkitIcon;
    sidebar.title.caption = 'Fine-tuning runs';
    app.shell.add(sidebar, 'left', { rank: 650 });
    restorer?.add(sidebar, 'ftkit-runs-sidebar');

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(loaded => {
          const apply = () => {
            settings = { ...DEFAULT_SETTINGS, ...(loaded.composite as Partial<IPollSettings>) };
            poller.reschedule();
          };
          apply();
          loaded.changed.connect(apply);
        })
        .catch(error => console.warn(`ftkit: settings not loaded, using the defaults: ${message(error)}`));
    }

    // --- report tabs ---------------------------------------------------------------------------
    const reports = new WidgetTracker<MainAreaWidget<ReportView>>({ namespace: 'ftkit-report' });
    app.commands.addCommand(CommandIDs.openReport, {
      label: args => (args.id ? `Open report of ${args.name || args.id}` : 'Open run report'),
      execute: async args => {
        const id = String(args.id ?? '');
        if (!id) {
          throw new Error('ftkit:open-report needs an id');
        }
        let tab = reports.find(w => w.content.runId === id);
        if (!tab) {
          tab = new MainAreaWidget({ content: new ReportView(id) });
          tab.id = `ftkit-report-${id}`;
          tab.title.label = `Report: ${args.name || id}`;
          tab.title.caption = `ftkit report of run ${id}`;
          tab.title.icon = ftkitIcon;
          tab.title.closable = true;
          void reports.add(tab);
          app.shell.add(tab, 'main');
        }
        app.shell.activateById(tab.id);
        try {
          tab.content.setHtml(await api.report(id)); // reloaded each time it is asked for
        } catch (error) {
          tab.content.showError(`Cannot load the report of ${id}: ${message(error)}`);
        }
      }
    });

    // --- the notebook actions ------------------------------------------------------------------
    app.commands.addCommand(CommandIDs.insertLoadRun, {
      label: 'Insert load_run for a run',
      execute: args => {
        const panel = notebooks?.currentWidget;
        if (!panel) {
          Notification.warning('Open a notebook first: "Insert load_run" adds a cell to the current notebook.', {
            autoClose: 5000
          });
          return;
        }
        const notebook = panel.content;
        NotebookActions.insertBelow(notebook);
        notebook.activeCell?.model.sharedModel.setSource(loadRunSnippet(String(args.id)));
        app.shell.activateById(panel.id);
      }
    });

    app.commands.addCommand(CommandIDs.stopRun, {
      label: 'Stop a running run',
      execute: async args => {
        await api.stop(String(args.id));
        await poller.refresh();
      }
    });

    app.commands.addCommand(CommandIDs.compareRuns, {
      label: 'Compare runs in a new notebook',
      execute: async args => {
        const ids = (args.ids as string[]) ?? [];
        const details = await Promise.all(ids.map(id => api.run(id)));
        const runsDir = poller.last?.runs_dir ?? (await api.runs()).runs_dir;
        return createNotebook('compare_runs', compareNotebook(details, runsDir));
      }
    });

    app.commands.addCommand(CommandIDs.refreshRuns, {
      label: 'Refresh fine-tuning runs',
      execute: () => poller.refresh()
    });

    app.commands.addCommand(CommandIDs.showRuns, {
      label: 'Show fine-tuning runs',
      icon: ftkitIcon,
      execute: () => app.shell.activateById(sidebar.id)
    });

    // --- launcher cards ------------------------------------------------------------------------
    app.commands.addCommand(CommandIDs.tour, {
      label: 'ftkit tour',
      caption: 'Copy the guided notebooks into the current folder (those already there are kept) and open the quickstart',
      icon: ftkitIcon,
      execute: async () => {
        try {
          const result = await copyTour(api, files, currentFolder());
          await open(result.open);
          return result;
        } catch (error) {
          Notification.error(`ftkit tour: ${message(error)}`, { autoClose: false });
          throw error;
        }
      }
    });

    app.commands.addCommand(CommandIDs.newNotebook, {
      label: 'New fine-tuning notebook',
      caption: 'A notebook with a model, data in the DataPanel and a TrainPanel, in the current folder',
      icon: ftkitIcon,
      execute: async () => {
        try {
          return await createNotebook('fine_tuning', starterNotebook());
        } catch (error) {
          Notification.error(`New fine-tuning notebook: ${message(error)}`, { autoClose: false });
          throw error;
        }
      }
    });

    launcher?.add({ command: CommandIDs.tour, category: CATEGORY, rank: 0 });
    launcher?.add({ command: CommandIDs.newNotebook, category: CATEGORY, rank: 1 });
    for (const command of [CommandIDs.tour, CommandIDs.newNotebook, CommandIDs.showRuns, CommandIDs.refreshRuns]) {
      palette?.addItem({ command, category: CATEGORY });
    }
  }
};

export default plugin;
